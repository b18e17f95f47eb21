//! The acker against the stack's SQS: finished messages are deleted ten to a call, a
//! handle SQS refuses costs only itself, and closing flushes without waiting out the linger.

use std::sync::Arc;
use std::time::Duration;

use shared::acker::Acker;
use shared::queue::{Delivery, Queue};
use testkit::TestApp;

/// Sends `count` messages and receives every one of them (hidden for the queue's
/// visibility timeout from then on).
async fn received(queue: &Queue, count: usize) -> Vec<Delivery> {
    for index in 0..count {
        queue.send(&format!("message {index}")).await.unwrap();
    }
    let mut deliveries = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while deliveries.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received only {} of {count}",
            deliveries.len()
        );
        deliveries.extend(queue.receive(10, Duration::from_secs(1)).await.unwrap());
    }
    deliveries
}

/// Messages in the queue, visible or not.
async fn left(queue: &Queue) -> u64 {
    let depth = queue.depth().await.unwrap();
    depth.visible + depth.in_flight + depth.delayed
}

/// `name{queue="…"} value` from the process's Prometheus text, 0 when absent.
fn metric(name: &str, queue: &str) -> f64 {
    let text = shared::metrics::handle().render();
    let prefix = format!("{name}{{queue=\"{queue}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn finished_messages_are_deleted_ten_to_a_call() {
    shared::metrics::handle();
    let app = TestApp::spawn().await.unwrap();
    let queue = Arc::new(app.queue.clone());
    let deliveries = received(&queue, 23).await;
    assert_eq!(left(&queue).await, 23);

    let acker = Acker::start(queue.clone(), Duration::from_secs(2));
    let acks = acker.sender();
    for delivery in &deliveries {
        acks.ack(&delivery.receipt_handle);
    }
    drop(acks);
    acker.close(Duration::from_secs(20)).await;

    assert_eq!(left(&queue).await, 0, "every acknowledged message is gone");
    // 23 handles queued at once: two full batches and the three left at close.
    assert_eq!(metric("glassbox_ack_batch_size_count", &queue.name), 3.0);
    assert_eq!(metric("glassbox_ack_batch_size_sum", &queue.name), 23.0);
}

#[tokio::test]
async fn a_handle_sqs_refuses_costs_only_itself() {
    let app = TestApp::spawn().await.unwrap();
    let queue = Arc::new(app.queue.clone());
    let deliveries = received(&queue, 4).await;

    let mut handles: Vec<String> = deliveries
        .iter()
        .map(|delivery| delivery.receipt_handle.clone())
        .collect();
    handles.insert(2, "not-a-receipt-handle".into());
    let failed = queue.delete_batch(&handles).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "not-a-receipt-handle");
    assert!(!failed[0].1.is_empty(), "the failure names its reason");
    assert_eq!(left(&queue).await, 0, "the four real handles were deleted");
}

#[tokio::test]
async fn closing_flushes_at_once_instead_of_waiting_out_the_linger() {
    let app = TestApp::spawn().await.unwrap();
    let queue = Arc::new(app.queue.clone());
    let deliveries = received(&queue, 3).await;

    let acker = Acker::start(queue.clone(), Duration::from_secs(3600));
    let acks = acker.sender();
    for delivery in &deliveries {
        acks.ack(&delivery.receipt_handle);
    }
    drop(acks);
    tokio::time::timeout(
        Duration::from_secs(20),
        acker.close(Duration::from_secs(60)),
    )
    .await
    .expect("close flushed without waiting for the hour-long linger");
    assert_eq!(left(&queue).await, 0);
}
