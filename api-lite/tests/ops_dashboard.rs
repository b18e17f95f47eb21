//! The `/ops` dashboard in headless Chromium (Debian's `chromium`, driven through
//! `chromedriver`'s WebDriver HTTP API): the page loads, shows queue depths the test
//! created, and a redrive click moves a dead message back to its source queue. A token
//! without the ops role gets the forbidden banner. One test checks the page without a
//! browser.
//!
//! A missing chromedriver fails the browser tests (run `scripts/stack.sh deps`); they are
//! never skipped. `TEST_LOG=1` also shows chromedriver's output.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::TestApp;
use tokio::process::{Child, Command};
use uuid::Uuid;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const PAGE_TITLE: &str = "GlassBox Fleet ops";
/// How long chromedriver may take to answer `/status`.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the page may take to show what a test waits for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// What the queue table's row for `arguments[0]` shows, or `null` without one.
const QUEUE_ROW_SCRIPT: &str = r#"
    const row = document.querySelector('#queues-body tr[data-queue="' + arguments[0] + '"]');
    if (!row) { return null; }
    const field = (name) => row.querySelector('[data-field="' + name + '"]').textContent.trim();
    return { visible: field("visible"), dlq_visible: field("dlq_visible") };
"#;

/// The DLQ browser's task line.
const TASK_SCRIPT: &str = r#"
    const line = document.getElementById("task-status");
    return { status: line.dataset.status, text: line.textContent };
"#;

/// The error banner: whether it shows, its code, HTTP status and text.
const BANNER_SCRIPT: &str = r#"
    const banner = document.getElementById("error-banner");
    return {
        visible: !banner.hidden,
        code: banner.dataset.code || null,
        status: banner.dataset.status || null,
        text: banner.textContent.replace(/\s+/g, " ").trim(),
    };
"#;

/// chromedriver on a free port, in its own process group so that dropping it also ends
/// the Chromium processes it started.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    async fn start() -> anyhow::Result<Self> {
        for binary in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(binary).exists() {
                bail!(
                    "{binary} is missing; the dashboard tests need Debian's chromium and \
                     chromium-driver: run `scripts/stack.sh deps`"
                );
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        let mut driver = Self { child, port };
        driver.wait_until_ready().await?;
        Ok(driver)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let status_url = format!("{}/status", self.url());
        let started = Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait()? {
                bail!("chromedriver exited during start ({exit}); TEST_LOG=1 shows its output");
            }
            if let Ok(response) = http.get(&status_url).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return Ok(());
            }
            if started.elapsed() > DRIVER_START_TIMEOUT {
                bail!("chromedriver did not answer {status_url} within {DRIVER_START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // `id()` is `None` once the child was reaped, so a recycled group is never hit.
        if let Some(process_group) = self.child.id().filter(|pid| *pid > 1) {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{process_group}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The key W3C WebDriver uses for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One headless Chromium session, driven through chromedriver's W3C WebDriver HTTP API.
struct Browser {
    http: reqwest::Client,
    session_url: String,
    driver: ChromeDriver,
}

impl Browser {
    async fn launch() -> anyhow::Result<Self> {
        let driver = ChromeDriver::start().await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-extensions", "--no-first-run",
                    "--window-size=1280,900"
                ]
            }
        }}});
        let session = webdriver(
            &http,
            Method::POST,
            &format!("{}/session", driver.url()),
            Some(capabilities),
        )
        .await
        .context("opening a headless Chromium session through chromedriver")?;
        let session_id = session["sessionId"]
            .as_str()
            .with_context(|| format!("chromedriver gave no session id: {session}"))?;
        let session_url = format!("{}/session/{session_id}", driver.url());
        Ok(Self {
            http,
            session_url,
            driver,
        })
    }

    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        webdriver(
            &self.http,
            method,
            &format!("{}{path}", self.session_url),
            body,
        )
        .await
    }

    /// Ends the session (Chromium quits), then chromedriver.
    async fn close(self) -> anyhow::Result<()> {
        self.command(Method::DELETE, "", None).await?;
        drop(self.driver);
        Ok(())
    }

    /// Navigates and waits for the page's load event.
    async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await?;
        Ok(())
    }

    async fn title(&self) -> anyhow::Result<String> {
        let title = self.command(Method::GET, "/title", None).await?;
        Ok(title.as_str().unwrap_or_default().to_string())
    }

    async fn current_url(&self) -> anyhow::Result<String> {
        let url = self.command(Method::GET, "/url", None).await?;
        Ok(url.as_str().unwrap_or_default().to_string())
    }

    /// Runs `script`, a function body that may read `arguments`, in the page.
    async fn execute(&self, script: &str, arguments: Vec<Value>) -> anyhow::Result<Value> {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": arguments })),
        )
        .await
    }

    /// Clicks the element `selector` finds, as a user would (it must be visible).
    async fn click(&self, selector: &str) -> anyhow::Result<()> {
        let element = self
            .command(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await
            .with_context(|| format!("finding {selector}"))?;
        let element_id = element[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("no element reference for {selector}: {element}"))?;
        self.command(
            Method::POST,
            &format!("/element/{element_id}/click"),
            Some(json!({})),
        )
        .await
        .with_context(|| format!("clicking {selector}"))?;
        Ok(())
    }

    /// Runs `script` every 100 ms until `done` accepts its result, which it returns.
    /// On timeout the error carries the last result and the page's text.
    async fn wait_for(
        &self,
        what: &str,
        script: &str,
        arguments: Vec<Value>,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let seen = self.execute(script, arguments.clone()).await?;
            if done(&seen) {
                return Ok(seen);
            }
            if started.elapsed() > PAGE_TIMEOUT {
                let page = self
                    .execute("return document.body.innerText;", Vec::new())
                    .await
                    .unwrap_or_default();
                bail!(
                    "waited {PAGE_TIMEOUT:?} for {what}; last seen: {seen}\n--- page ---\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One WebDriver call: the answer's `value`, or its `error` and `message` as an error.
async fn webdriver(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut request = http.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let mut answer: Value = response
        .json()
        .await
        .with_context(|| format!("{method} {url} answered {status} without JSON"))?;
    if !status.is_success() {
        bail!(
            "{method} {url} answered {status}: {}: {}",
            answer["value"]["error"],
            answer["value"]["message"]
        );
    }
    Ok(answer["value"].take())
}

/// Sends a well-formed `file.process` message to `queue_url`; returns the SQS message
/// id and the job id (no job row exists for it).
async fn send_job(app: &TestApp, queue_url: &str) -> anyhow::Result<(String, Uuid)> {
    let job_id = Uuid::now_v7();
    let body = json!({ "v": 1, "kind": "file.process", "job_id": job_id, "org_id": app.org_id });
    let sent = app
        .aws
        .sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(body.to_string())
        .send()
        .await?;
    Ok((sent.message_id.context("SendMessage gave no id")?, job_id))
}

/// (visible, in flight) messages of a queue, straight from SQS.
async fn queue_depth(app: &TestApp, queue_url: &str) -> anyhow::Result<(u64, u64)> {
    let attributes = app
        .aws
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?
        .attributes
        .unwrap_or_default();
    let read = |name: &QueueAttributeName| -> anyhow::Result<u64> {
        Ok(attributes
            .get(name)
            .with_context(|| format!("{queue_url} has no {name:?}"))?
            .parse()?)
    };
    Ok((
        read(&QueueAttributeName::ApproximateNumberOfMessages)?,
        read(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
    ))
}

fn ops_url(app: &TestApp, token: &str) -> String {
    format!("{}/ops#token={token}", app.base_url)
}

#[tokio::test]
async fn ops_page_is_served_as_one_self_contained_html_file() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    // The page itself is public; every route it calls needs an ops token.
    let response = app.http.get(app.url("/ops")).send().await?;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .context("no content-type")?
        .to_str()?
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await?;
    assert!(page.contains(&format!("<title>{PAGE_TITLE}</title>")));
    for external in ["<script src", "rel=\"stylesheet\"", "http://", "https://"] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
    Ok(())
}

#[tokio::test]
async fn dashboard_shows_queue_depths_and_a_redrive_click_moves_a_dead_message_back()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    // No worker runs, so these stay visible in the source queue.
    for _ in 0..3 {
        send_job(&app, &app.queue.url).await?;
    }
    let (dead_message_id, dead_job_id) = send_job(&app, &app.queue.dlq_url).await?;

    let browser = Browser::launch().await?;
    browser
        .goto(&ops_url(&app, &app.ops_token("dashboard-test")))
        .await?;
    assert_eq!(browser.title().await?, PAGE_TITLE);
    browser
        .wait_for(
            "the file-jobs row to show 3 visible and 1 dead",
            QUEUE_ROW_SCRIPT,
            vec![json!("file-jobs")],
            |row| row["visible"] == "3" && row["dlq_visible"] == "1",
        )
        .await?;
    let address = browser.current_url().await?;
    assert!(!address.contains('#'), "the token stays in {address}");

    browser
        .click(r#"button[data-dlq-queue="file-jobs"]"#)
        .await?;
    let row = format!(r#"#dlq-body tr[data-message-id="{dead_message_id}"]"#);
    browser
        .wait_for(
            "the dead message's row in the DLQ browser",
            "const row = document.querySelector(arguments[0]); return row ? row.dataset.jobId : null;",
            vec![json!(row)],
            |job_id| *job_id == json!(dead_job_id),
        )
        .await?;
    browser
        .click(&format!(r#"{row} button[data-action="redrive"]"#))
        .await?;
    let task = browser
        .wait_for(
            "the redrive task to finish",
            TASK_SCRIPT,
            Vec::new(),
            |task| matches!(task["status"].as_str(), Some("succeeded" | "failed")),
        )
        .await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    let progress = task["text"].as_str().unwrap_or_default();
    assert!(progress.contains("moved 1 of 1"), "{progress}");

    assert_eq!(
        queue_depth(&app, &app.queue.dlq_url).await?,
        (0, 0),
        "the DLQ still holds messages"
    );
    let (source_visible, _) = queue_depth(&app, &app.queue.url).await?;
    assert_eq!(
        source_visible, 4,
        "the dead message is not back in file-jobs"
    );

    browser
        .wait_for(
            "the file-jobs row to show 4 visible and 0 dead",
            QUEUE_ROW_SCRIPT,
            vec![json!("file-jobs")],
            |row| row["visible"] == "4" && row["dlq_visible"] == "0",
        )
        .await?;
    browser
        .wait_for(
            "the dead message's row to leave the DLQ browser",
            "return document.querySelector(arguments[0]) === null;",
            vec![json!(row)],
            |gone| *gone == true,
        )
        .await?;
    browser
        .wait_for(
            "the redrive in the recent ops actions",
            r#"return document.querySelector('#audit-body tr[data-action="dlq.redrive"]') !== null;"#,
            Vec::new(),
            |listed| *listed == true,
        )
        .await?;
    let banner = browser.execute(BANNER_SCRIPT, Vec::new()).await?;
    assert_eq!(banner["visible"], false, "{banner}");
    browser.close().await
}

#[tokio::test]
async fn dashboard_shows_the_forbidden_banner_for_a_token_without_the_ops_role()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let browser = Browser::launch().await?;
    browser.goto(&ops_url(&app, &app.token)).await?;
    let banner = browser
        .wait_for("the error banner", BANNER_SCRIPT, Vec::new(), |banner| {
            banner["visible"] == true
        })
        .await?;
    assert_eq!(banner["status"], "403", "{banner}");
    assert_eq!(banner["code"], "forbidden", "{banner}");
    let text = banner["text"].as_str().unwrap_or_default();
    assert!(text.contains("lacks the ops role"), "{text}");
    let page = browser
        .execute(
            r#"return {
                token_form: !document.getElementById("token-form").hidden,
                queue_rows: document.querySelectorAll('#queues-body tr[data-queue]').length,
            };"#,
            Vec::new(),
        )
        .await?;
    assert_eq!(page, json!({ "token_form": true, "queue_rows": 0 }));
    browser.close().await
}

#[tokio::test]
async fn dashboard_lists_a_failed_webhook_delivery_and_a_click_redelivers_it() -> anyhow::Result<()>
{
    let receiver = testkit::webhook_receiver::WebhookReceiver::start(Vec::new()).await?;
    let app = TestApp::spawn_with(testkit::TestOptions {
        configure: Some(std::sync::Arc::new(|settings| {
            settings.webhooks.allow_loopback = true;
            settings.webhooks.poll_ms = 100;
        })),
        ..testkit::TestOptions::default()
    })
    .await?;
    // A delivery whose retry window ran out while the receiver was down.
    let endpoint = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, org_id, url, event_types, secret) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(endpoint)
    .bind(app.org_id)
    .bind(receiver.url())
    .bind(vec!["file.ready"])
    .bind(shared::webhooks::signing::new_secret())
    .execute(&app.pool)
    .await?;
    let delivery: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, org_id, event_type, payload, status, attempts, failed_at, last_error) \
         VALUES ('msg_dashboard', $1, $2, 'file.ready', '{\"type\": \"file.ready\", \"data\": {}}', 'failed', 27, now(), 'could not connect') RETURNING id",
    )
    .bind(endpoint)
    .bind(app.org_id)
    .fetch_one(&app.pool)
    .await?;

    let browser = Browser::launch().await?;
    browser
        .goto(&ops_url(&app, &app.ops_token("dashboard-test")))
        .await?;
    let row = format!(r#"#webhooks-body tr[data-delivery-id="{delivery}"]"#);
    browser
        .wait_for(
            "the failed delivery's row",
            "return document.querySelector(arguments[0]) !== null;",
            vec![json!(row)],
            |listed| *listed == true,
        )
        .await?;
    browser
        .click(&format!(r#"{row} button[data-action="redeliver"]"#))
        .await?;
    let received = receiver.wait_for(1, PAGE_TIMEOUT).await?;
    assert_eq!(
        received[0].id, "msg_dashboard",
        "redelivery changed the webhook-id"
    );
    browser
        .wait_for(
            "the delivery's row to leave the failed list",
            "return document.querySelector(arguments[0]) === null;",
            vec![json!(row)],
            |gone| *gone == true,
        )
        .await?;
    browser
        .wait_for(
            "the redelivery in the recent ops actions",
            r#"return document.querySelector('#audit-body tr[data-action="webhook.redeliver"]') !== null;"#,
            Vec::new(),
            |listed| *listed == true,
        )
        .await?;
    browser.close().await
}
