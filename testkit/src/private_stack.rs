//! A Postgres cluster and a moto server of the test's own, on their own loopback ports,
//! for tests that restart or stop them. The shared stack other tests (and other
//! engineers' runs) use is never touched.
//!
//! - [`PrivatePostgres`]: `initdb` into a fresh folder as the `postgres` user (initdb and
//!   pg_ctl refuse to run as root), pgvector from the system-wide install; `restart`
//!   is `pg_ctl restart -m fast`.
//! - [`PrivateMoto`]: the stack venv's `moto_server` on its own port. moto keeps
//!   everything in memory, so a restart loses it all; [`PrivateMoto::restart`] puts back
//!   what is durable on AWS (queues with their attributes, buckets with their objects)
//!   and loses what an outage may lose: every SQS message, in flight or waiting. That is
//!   the strict version of the fault: Postgres is the truth, and the fleet must recover
//!   lost messages on its own.
//!
//! [`PrivateStack::endpoints`] is what [`crate::TestOptions::stack`] takes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use tokio::process::{Child, Command};

use crate::{StackEndpoints, env_or, workspace_root};

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs `program` as the `postgres` user when this process is root (`runuser`), as
/// itself otherwise; fails with its output when it fails.
async fn run_as_postgres(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let running_as_root = std::fs::metadata("/proc/self")
        .map(|metadata| metadata.uid() == 0)
        .unwrap_or(false);
    let mut command = if running_as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {args:?} failed ({}): {}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Where private clusters live: `/tmp/glassbox-private-pg-XXXXXX`.
const PRIVATE_DATA_PARENT: &str = "/tmp";
const PRIVATE_DATA_PREFIX: &str = "glassbox-private-pg-";

/// A private Postgres 15 cluster on its own port; stopped and deleted on drop.
pub struct PrivatePostgres {
    pub port: u16,
    data_dir: PathBuf,
    bin_dir: PathBuf,
}

impl PrivatePostgres {
    /// Creates and starts the cluster (about two seconds).
    pub async fn start() -> anyhow::Result<Self> {
        let bin_dir = PathBuf::from(env_or("GLASSBOX_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"));
        let port = free_port()?;
        // Made by the postgres user itself, so it owns the folder initdb fills.
        let data_dir = PathBuf::from(
            run_as_postgres(
                Path::new("mktemp"),
                &[
                    "-d",
                    &format!("{PRIVATE_DATA_PARENT}/{PRIVATE_DATA_PREFIX}XXXXXX"),
                ],
            )
            .await?,
        );
        let cluster = Self {
            port,
            data_dir,
            bin_dir,
        };
        let data = cluster.data_dir.to_string_lossy().to_string();
        run_as_postgres(
            &cluster.bin_dir.join("initdb"),
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        )
        .await?;
        // Settings go on the command line, so nothing but postgres writes the folder.
        cluster.pg_ctl(&["start"]).await?;
        Ok(cluster)
    }

    fn options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c max_connections=200 -c fsync=off",
            self.port,
            self.data_dir.display()
        )
    }

    async fn pg_ctl(&self, action: &[&str]) -> anyhow::Result<()> {
        let data = self.data_dir.to_string_lossy().to_string();
        let log = self
            .data_dir
            .join("server.log")
            .to_string_lossy()
            .to_string();
        let options = self.options();
        let mut args = vec!["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options];
        args.extend_from_slice(action);
        run_as_postgres(&self.bin_dir.join("pg_ctl"), &args).await?;
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:<port>`, without a database name.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server is back when it returns.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "fast", "restart"]).await
    }

    /// Stops the server (`-m fast`) until [`Self::start_again`].
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "fast", "stop"]).await
    }

    pub async fn start_again(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["start"]).await
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data_dir.to_string_lossy().to_string();
        let pg_ctl = self.bin_dir.join("pg_ctl").to_string_lossy().to_string();
        let running_as_root = std::fs::metadata("/proc/self")
            .map(|metadata| metadata.uid() == 0)
            .unwrap_or(false);
        let mut stop = if running_as_root {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--", &pg_ctl]);
            command
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = stop
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if is_private_data_dir(&self.data_dir) {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Whether `path` is a folder [`PrivatePostgres::start`] made, so drop may delete it.
///
/// By name, not `Path::starts_with`, which compares whole components: no folder
/// "starts with" `/tmp/glassbox-private-pg-`, and every cluster's 48 MB stayed behind.
fn is_private_data_dir(path: &Path) -> bool {
    path.parent() == Some(Path::new(PRIVATE_DATA_PARENT))
        && path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| {
                name.len() > PRIVATE_DATA_PREFIX.len() && name.starts_with(PRIVATE_DATA_PREFIX)
            })
}

/// One stored object: key, content type and bytes.
type StoredObject = (String, Option<String>, Vec<u8>);

/// What a moto restart puts back: queues and buckets, as AWS would keep them.
struct DurableState {
    /// Queue name → its settable attributes, DLQs (queues without a redrive policy) first.
    queues: Vec<(String, HashMap<QueueAttributeName, String>)>,
    /// Each bucket with its objects.
    objects: Vec<(String, Vec<StoredObject>)>,
}

/// A private moto server (SQS and S3) on its own port; killed on drop.
pub struct PrivateMoto {
    pub port: u16,
    program: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl PrivateMoto {
    /// Starts `moto_server` from the stack's venv (`GLASSBOX_TEST_MOTO_SERVER` overrides).
    pub async fn start() -> anyhow::Result<Self> {
        let program = std::env::var_os("GLASSBOX_TEST_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".stack/venv/bin/moto_server"));
        anyhow::ensure!(
            program.exists(),
            "{} is missing; run `make stack`",
            program.display()
        );
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("glassbox-private-moto-{port}.log"));
        let mut moto = Self {
            port,
            program,
            child: None,
            log,
        };
        moto.spawn().await?;
        Ok(moto)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new(&self.program)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let answered = http
                .get(format!("{}/moto-api/", self.endpoint()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if answered {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "moto did not answer on port {} within 30s; see {}",
                    self.port,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn clients(&self) -> shared::aws::AwsClients {
        shared::aws::AwsClients::new(&shared::config::AwsSettings {
            region: "us-east-1".into(),
            endpoint_url: Some(self.endpoint()),
        })
        .await
    }

    /// Kills moto (as `kill -9` would) and starts it again on the same port with the
    /// queues and buckets (and objects) it had, but none of its messages.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_after(Duration::ZERO).await
    }

    /// [`Self::restart`], with moto down for `downtime` in between.
    pub async fn restart_after(&mut self, downtime: Duration) -> anyhow::Result<()> {
        let durable = self.snapshot().await?;
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        tokio::time::sleep(downtime).await;
        self.spawn().await?;
        self.restore(durable).await
    }

    async fn snapshot(&self) -> anyhow::Result<DurableState> {
        let clients = self.clients().await;
        let mut queues = Vec::new();
        let urls = clients
            .sqs
            .list_queues()
            .send()
            .await?
            .queue_urls
            .unwrap_or_default();
        for url in urls {
            let name = url.rsplit('/').next().unwrap_or_default().to_string();
            let attributes = clients
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await?
                .attributes
                .unwrap_or_default();
            let settable: HashMap<QueueAttributeName, String> = attributes
                .into_iter()
                .filter(|(name, _)| {
                    matches!(
                        name,
                        QueueAttributeName::VisibilityTimeout
                            | QueueAttributeName::MessageRetentionPeriod
                            | QueueAttributeName::DelaySeconds
                            | QueueAttributeName::ReceiveMessageWaitTimeSeconds
                            | QueueAttributeName::RedrivePolicy
                    )
                })
                .collect();
            queues.push((name, settable));
        }
        queues.sort_by_key(|(_, attributes)| {
            attributes.contains_key(&QueueAttributeName::RedrivePolicy)
        });
        let mut objects = Vec::new();
        let buckets = clients
            .s3
            .list_buckets()
            .send()
            .await?
            .buckets
            .unwrap_or_default();
        for bucket in buckets {
            let Some(bucket_name) = bucket.name else {
                continue;
            };
            let mut stored = Vec::new();
            let listed = clients
                .s3
                .list_objects_v2()
                .bucket(&bucket_name)
                .send()
                .await?
                .contents
                .unwrap_or_default();
            for object in listed {
                let Some(key) = object.key else { continue };
                let got = clients
                    .s3
                    .get_object()
                    .bucket(&bucket_name)
                    .key(&key)
                    .send()
                    .await?;
                let content_type = got.content_type.clone();
                let bytes = got.body.collect().await?.into_bytes().to_vec();
                stored.push((key, content_type, bytes));
            }
            objects.push((bucket_name, stored));
        }
        Ok(DurableState { queues, objects })
    }

    async fn restore(&self, durable: DurableState) -> anyhow::Result<()> {
        let clients = self.clients().await;
        for (name, attributes) in durable.queues {
            clients
                .sqs
                .create_queue()
                .queue_name(&name)
                .set_attributes(Some(attributes))
                .send()
                .await
                .with_context(|| format!("recreating queue {name}"))?;
        }
        for (bucket, objects) in durable.objects {
            clients.s3.create_bucket().bucket(&bucket).send().await?;
            for (key, content_type, bytes) in objects {
                clients
                    .s3
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .set_content_type(content_type)
                    .body(bytes.into())
                    .send()
                    .await?;
            }
        }
        Ok(())
    }
}

/// A private Postgres and moto together.
pub struct PrivateStack {
    pub postgres: PrivatePostgres,
    pub moto: PrivateMoto,
}

impl PrivateStack {
    pub async fn start() -> anyhow::Result<Self> {
        let (postgres, moto) = tokio::try_join!(PrivatePostgres::start(), PrivateMoto::start())?;
        Ok(Self { postgres, moto })
    }

    /// For [`crate::TestOptions::stack`].
    pub fn endpoints(&self) -> StackEndpoints {
        StackEndpoints {
            postgres_server_url: self.postgres.server_url(),
            aws_endpoint: self.moto.endpoint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_folders_start_made_count_as_private_data() {
        assert!(is_private_data_dir(Path::new(
            "/tmp/glassbox-private-pg-DLUfr8"
        )));
        assert!(!is_private_data_dir(Path::new("/tmp/glassbox-private-pg-")));
        assert!(!is_private_data_dir(Path::new("/tmp")));
        assert!(!is_private_data_dir(Path::new(
            "/var/lib/glassbox-private-pg-DLUfr8"
        )));
        assert!(!is_private_data_dir(Path::new(
            "/tmp/glassbox-private-pg-DLUfr8/base"
        )));
        assert!(!is_private_data_dir(Path::new("/tmp/other-DLUfr8")));
    }

    #[tokio::test]
    async fn a_dropped_cluster_leaves_no_folder_behind() {
        let cluster = PrivatePostgres::start().await.unwrap();
        let folder = cluster.data_dir.clone();
        assert!(folder.join("PG_VERSION").exists(), "{}", folder.display());
        drop(cluster);
        assert!(!folder.exists(), "{} was left behind", folder.display());
    }
}
