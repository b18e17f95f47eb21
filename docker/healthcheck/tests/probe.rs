//! The probe against real sockets: a healthy server, an unhealthy one, a silent one, none;
//! and the binary's exit statuses, which are all Docker reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use glassbox_healthcheck::{ProbeError, Role, probe, probe_address};

/// Serves one connection: reads the request, then answers `response` (or nothing).
fn serve_once(response: Option<&'static str>) -> (SocketAddr, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0_u8; 512];
        let read = stream.read(&mut request).unwrap();
        match response {
            Some(text) => stream.write_all(text.as_bytes()).unwrap(),
            None => thread::sleep(Duration::from_secs(3)),
        }
        String::from_utf8_lossy(&request[..read]).into_owned()
    });
    (address, handle)
}

/// A port that nothing listens on: bound, then released.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address
}

#[test]
fn a_200_answer_is_healthy_and_the_request_is_get_health() {
    let (address, server) = serve_once(Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
    probe(address, Duration::from_secs(2)).unwrap();
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /health HTTP/1.0\r\n"),
        "{request:?}"
    );
}

#[test]
fn a_503_answer_is_unhealthy_and_names_the_status_line() {
    let (address, server) = serve_once(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n"));
    let error = probe(address, Duration::from_secs(2)).unwrap_err();
    server.join().unwrap();
    match &error {
        ProbeError::Unhealthy { status_line, .. } => {
            assert_eq!(status_line, "HTTP/1.1 503 Service Unavailable")
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(error.exit_status(), 1);
}

#[test]
fn a_non_http_answer_is_unhealthy() {
    let (address, server) = serve_once(Some("200 but not http\r\n"));
    let error = probe(address, Duration::from_secs(2)).unwrap_err();
    server.join().unwrap();
    assert!(matches!(error, ProbeError::Unhealthy { .. }), "{error:?}");
}

#[test]
fn nothing_listening_is_an_io_error() {
    let error = probe(closed_port(), Duration::from_secs(2)).unwrap_err();
    assert!(matches!(error, ProbeError::Io { .. }), "{error:?}");
    assert_eq!(error.exit_status(), 1);
}

#[test]
fn a_silent_server_is_given_up_on_within_the_timeout() {
    let (address, server) = serve_once(None);
    let started = Instant::now();
    let error = probe(address, Duration::from_millis(200)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, ProbeError::Io { .. }), "{error:?}");
    server.join().unwrap();
}

#[test]
fn wildcard_listen_addresses_are_probed_on_loopback() {
    assert_eq!(
        probe_address("0.0.0.0:8080").unwrap(),
        "127.0.0.1:8080".parse().unwrap()
    );
    assert_eq!(
        probe_address("[::]:9100").unwrap(),
        "[::1]:9100".parse().unwrap()
    );
    assert_eq!(
        probe_address("127.0.0.1:56101").unwrap(),
        "127.0.0.1:56101".parse().unwrap()
    );
}

#[test]
fn an_unreadable_listen_address_is_a_configuration_error() {
    let error = probe_address("no-port-here").unwrap_err();
    assert!(
        matches!(error, ProbeError::BadListenAddress { .. }),
        "{error:?}"
    );
    assert_eq!(error.exit_status(), 2);
}

#[test]
fn roles_read_the_fleet_s_listen_variables() {
    assert_eq!(Role::from_argument("api"), Some(Role::Api));
    assert_eq!(Role::from_argument("worker"), Some(Role::Worker));
    assert_eq!(Role::from_argument("db"), None);
    assert_eq!(Role::Api.listen_variable().0, "GLASSBOX_API__LISTEN");
    assert_eq!(Role::Worker.listen_variable().0, "GLASSBOX_METRICS__LISTEN");
}

fn run_binary(role: &str, variable: &str, listen: &str) -> Option<i32> {
    Command::new(env!("CARGO_BIN_EXE_glassbox-healthcheck"))
        .arg(role)
        .env(variable, listen)
        .status()
        .unwrap()
        .code()
}

#[test]
fn the_binary_exits_0_1_or_2_as_docker_expects() {
    let (healthy, server) = serve_once(Some("HTTP/1.1 200 OK\r\n\r\nok"));
    assert_eq!(
        run_binary("worker", "GLASSBOX_METRICS__LISTEN", &healthy.to_string()),
        Some(0)
    );
    server.join().unwrap();

    let (unhealthy, server) = serve_once(Some("HTTP/1.1 500 Internal Server Error\r\n\r\n"));
    assert_eq!(
        run_binary("api", "GLASSBOX_API__LISTEN", &unhealthy.to_string()),
        Some(1)
    );
    server.join().unwrap();

    assert_eq!(
        run_binary("api", "GLASSBOX_API__LISTEN", &closed_port().to_string()),
        Some(1)
    );
    assert_eq!(
        run_binary("api", "GLASSBOX_API__LISTEN", "not an address"),
        Some(2)
    );
    assert_eq!(run_binary("database", "UNUSED", ""), Some(2));
}
