//! The README's quickstart, run exactly as written: its shell block is read from
//! README.md and run with bash against api-lite (in process), the real worker-files and
//! worker-agent binaries, Postgres and moto, with a scripted model that searches, asks
//! who the summary is for, and answers. Only `API` is set (the block mints its own
//! token with the `api-lite` binary), so an edit to the README that breaks a command
//! breaks this test.

use std::time::Duration;

use serde_json::json;
use testkit::TestApp;
use testkit::scripted::{ChatReply, ScriptedChat};

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");

/// The first `sh` block under `## Quickstart`.
fn quickstart_block() -> String {
    let readme = std::fs::read_to_string(testkit::workspace_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Quickstart\n")
        .nth(1)
        .expect("README.md has a Quickstart section");
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("the Quickstart has an sh block");
    block.split("\n```").next().unwrap().to_string()
}

#[tokio::test]
async fn the_readme_quickstart_runs_as_written() {
    let block = quickstart_block();
    for step in [
        "api-lite token",
        "/v1/files",
        "-X PUT",
        "/confirm",
        "/v1/search",
        "/execute",
        "/input",
        "/trace",
    ] {
        assert!(
            block.contains(step),
            "the quickstart lost its {step:?} step"
        );
    }
    let app = TestApp::spawn().await.unwrap();
    let _files = app
        .spawn_worker(
            testkit::workspace_binary("worker-files").to_str().unwrap(),
            &[],
        )
        .unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("search_files", json!({ "query": "crashed run" })),
        ChatReply::tool(
            "ask_human",
            json!({ "question": "Who is the summary for?" }),
        ),
        ChatReply::text(
            "For the on-call engineer: a crashed run resumes from its last committed step.",
        ),
    ])
    .await
    .unwrap();
    let _agent = app.spawn_agent(WORKER, &chat, &[]).unwrap();

    let directory = tempfile::tempdir().unwrap();
    let script = directory.path().join("quickstart.sh");
    std::fs::write(&script, &block).unwrap();
    let api_lite_dir = testkit::workspace_binary("api-lite")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        api_lite_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("bash")
            .args(["-euo", "pipefail"])
            .arg(&script)
            .current_dir(directory.path())
            .env("API", &app.base_url)
            .env_remove("TOKEN")
            .env("PATH", path)
            .env("GLASSBOX_AUTH__JWT_SECRET", testkit::JWT_SECRET)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the quickstart finished within two minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the quickstart failed:\n{stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"queued"), "confirm: {stdout}");
    assert!(
        stdout.contains("crashed run resumes"),
        "search found the file: {stdout}"
    );
    assert!(
        lines.contains(&"queued"),
        "the answer requeued the run: {stdout}"
    );
    for kind in ["human_input", "completed"] {
        assert!(
            lines.iter().any(|line| line.ends_with(kind)),
            "no {kind} in the trace: {stdout}"
        );
    }
    let answered = chat
        .requests()
        .iter()
        .any(|request| request.to_string().contains("the on-call engineer"));
    assert!(answered, "the answer never reached the model");
}
