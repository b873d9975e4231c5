//! Start-up refuses what it cannot run correctly, with a message that names
//! the cause: a bad setting, no NATS, a partition count that does not match
//! the stream, a damaged partition file.

mod common;

use common::*;

#[test]
fn a_bad_setting_names_the_key() {
    let data = tempfile::tempdir().unwrap();
    let (status, log) = Adclick::run_to_exit(
        "nats://127.0.0.1:1",
        data.path(),
        &[("ADCLICK_WATERMARK_DELAY", "5")],
    );
    assert!(!status.success());
    assert!(
        log.contains("watermark_delay")
            && log.contains("ADCLICK_WATERMARK_DELAY")
            && log.contains("unit"),
        "{log}"
    );
}

#[test]
fn no_nats_server_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let (status, log) = Adclick::run_to_exit(&url, data.path(), &[]);
    assert!(!status.success());
    assert!(
        log.contains("cannot connect to NATS") && log.contains(&url),
        "{log}"
    );
}

#[test]
fn jetstream_off_is_a_clear_error() {
    let nats = NatsServer::start_without_jetstream();
    let data = tempfile::tempdir().unwrap();
    let (status, log) = Adclick::run_to_exit(&nats.url(), data.path(), &[]);
    assert!(!status.success());
    assert!(log.contains("is JetStream enabled?"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_count_that_does_not_match_the_stream_is_refused() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(&nats, data.path(), &[("ADCLICK_PARTITIONS", "4")]);
    service.wait_ready().await;
    assert!(service
        .terminate(std::time::Duration::from_secs(10))
        .success());

    let (status, log) =
        Adclick::run_to_exit(&nats.url(), data.path(), &[("ADCLICK_PARTITIONS", "8")]);
    assert!(!status.success());
    assert!(
        log.contains("configured for 8 partitions") && log.contains("partition(4,1)"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_partition_file_stops_start_up_and_names_the_file() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("partition-1.redb"), vec![0x55; 8192]).unwrap();
    let (status, log) =
        Adclick::run_to_exit(&nats.url(), data.path(), &[("ADCLICK_PARTITIONS", "2")]);
    assert!(!status.success(), "never a silent start from zero");
    assert!(
        log.contains("partition-1.redb") && log.contains("move it aside"),
        "{log}"
    );
}
