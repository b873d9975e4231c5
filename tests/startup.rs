//! Start-up refuses what it cannot run correctly, with a message that names
//! the cause: a bad setting, no NATS, a partition count that does not match
//! the stream, a damaged partition file, one of a newer format.

mod common;

use common::*;
use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};

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

/// A partition file a newer adclick wrote, in a format version this one
/// does not know: start-up refuses it naming both versions, and `adclick
/// rebuild` replaces it only with `--force`. Nothing is written to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_file_of_a_newer_format_stops_start_up_naming_both_versions() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let known = adclick_actors::store::FORMAT_VERSION;
    let newer = known + 1;
    let file = data.path().join("partition-1.redb");
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, i64>::new("meta"))
            .unwrap()
            .insert("format_version", newer)
            .unwrap();
        txn.commit().unwrap();
    }
    let env = [("ADCLICK_PARTITIONS", "2")];
    let (status, log) = Adclick::run_to_exit(&nats.url(), data.path(), &env);
    assert!(!status.success(), "never a start that misreads the file");
    assert!(
        log.contains("partition-1.redb")
            && log.contains(&format!("format version {newer}"))
            && log.contains(&format!("up to {known}")),
        "{log}"
    );
    let (status, log) = Adclick::run_command(
        &["rebuild", "--partition", "1"],
        &nats.url(),
        data.path(),
        &env,
    );
    assert!(!status.success() && log.contains("--force"), "{log}");
    // Still only what the newer adclick wrote (redb itself may touch its
    // header on open).
    let db = redb::Database::create(&file).unwrap();
    let txn = db.begin_read().unwrap();
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(tables, ["meta"]);
    let meta = txn
        .open_table(redb::TableDefinition::<&str, i64>::new("meta"))
        .unwrap();
    assert_eq!(meta.get("format_version").unwrap().unwrap().value(), newer);
    assert_eq!(meta.len().unwrap(), 1);
}
