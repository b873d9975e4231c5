//! adclick against a nats-server with accounts and users holding exactly the
//! permissions docs/NATS-PERMISSIONS.md lists: with all of them the pipeline
//! counts exactly; without one, adclick says which subject it was refused.
//! Also the ways to authenticate end to end (nkey seed file, user and
//! password, a wrong password).

mod common;

use common::*;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const SETTINGS: &[(&str, &str)] = &[
    ("ADCLICK_PARTITIONS", "2"),
    ("ADCLICK_WATERMARK_DELAY", "2s"),
    ("ADCLICK_ALLOWED_LATENESS", "1h"),
    ("ADCLICK_IDLE_TIMEOUT", "300ms"),
];
const ADCLICK_PASSWORD: &str = "adclick-test-password";

/// What `adclick serve` publishes on one node with the default names
/// (docs/NATS-PERMISSIONS.md, "One node").
const ADCLICK_PUBLISH: &[&str] = &[
    "$JS.API.STREAM.INFO.CLICKS",
    "$JS.API.STREAM.CREATE.CLICKS",
    "$JS.API.STREAM.INFO.CLICKS_REJECTED",
    "$JS.API.STREAM.CREATE.CLICKS_REJECTED",
    "$JS.API.STREAM.INFO.ADCLICK_AGG",
    "$JS.API.STREAM.CREATE.ADCLICK_AGG",
    "$JS.API.CONSUMER.CREATE.CLICKS.>",
    "$JS.API.CONSUMER.DELETE.CLICKS.>",
    "$JS.API.CONSUMER.INFO.CLICKS.>",
    "$JS.API.CONSUMER.MSG.NEXT.CLICKS.>",
    "$JS.ACK.CLICKS.>",
    "rejected.>",
    "agg.>",
];
/// What it subscribes to: the replies of its requests and its deliveries.
const ADCLICK_SUBSCRIBE: &[&str] = &["_INBOX.>"];
/// What a member publishes in addition with `cluster = true`
/// (docs/NATS-PERMISSIONS.md, "Many nodes").
const CLUSTER_PUBLISH: &[&str] = &[
    "$JS.API.INFO",
    "$JS.API.CONSUMER.NAMES.CLICKS",
    "$JS.API.STREAM.INFO.KV_ADCLICK_MEMBERS",
    "$JS.API.STREAM.CREATE.KV_ADCLICK_MEMBERS",
    "$JS.API.STREAM.INFO.KV_ADCLICK_LEASES",
    "$JS.API.STREAM.CREATE.KV_ADCLICK_LEASES",
    "$JS.API.STREAM.INFO.KV_ADCLICK_STATE_POINTERS",
    "$JS.API.STREAM.CREATE.KV_ADCLICK_STATE_POINTERS",
    "$JS.API.STREAM.INFO.OBJ_ADCLICK_STATE",
    "$JS.API.STREAM.CREATE.OBJ_ADCLICK_STATE",
    "$KV.ADCLICK_MEMBERS.>",
    "$KV.ADCLICK_LEASES.>",
    "$KV.ADCLICK_STATE_POINTERS.>",
    "$JS.API.DIRECT.GET.KV_ADCLICK_MEMBERS.>",
    "$JS.API.DIRECT.GET.KV_ADCLICK_LEASES.>",
    "$JS.API.DIRECT.GET.KV_ADCLICK_STATE_POINTERS.>",
    "$JS.API.DIRECT.GET.OBJ_ADCLICK_STATE.>",
    "$JS.API.CONSUMER.CREATE.KV_ADCLICK_MEMBERS",
    "$JS.API.CONSUMER.CREATE.KV_ADCLICK_MEMBERS.>",
    "$JS.API.CONSUMER.CREATE.OBJ_ADCLICK_STATE",
    "$JS.API.CONSUMER.CREATE.OBJ_ADCLICK_STATE.>",
    "$JS.FC.KV_ADCLICK_MEMBERS.>",
    "$JS.FC.OBJ_ADCLICK_STATE.>",
    "$O.ADCLICK_STATE.>",
    "$JS.API.STREAM.PURGE.OBJ_ADCLICK_STATE",
    "adclick.query.>",
];

fn quoted(subjects: &[&str]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| format!("\"{s}\"")).collect();
    quoted.join(", ")
}

/// A server configuration with one account of three users: `adclick` (by
/// password, with `publish`), adclick by nkey (`adclick_nkey`, the same
/// permissions), a publisher that may only publish clicks, and an admin for
/// the test's own inspection.
fn server_config(publish: &[&str], adclick_nkey: &str, publisher_nkey: &str) -> String {
    server_config_with(publish, ADCLICK_SUBSCRIBE, "", adclick_nkey, publisher_nkey)
}

/// [`server_config`] with adclick's subscriptions and more permission
/// settings (`allow_responses`) given.
fn server_config_with(
    publish: &[&str],
    subscribe: &[&str],
    more: &str,
    adclick_nkey: &str,
    publisher_nkey: &str,
) -> String {
    let permissions = format!(
        "{{ publish: [{}], subscribe: [{}] {more} }}",
        quoted(publish),
        quoted(subscribe)
    );
    format!(
        r#"
accounts {{
  ADS {{
    jetstream: enabled
    users: [
      {{ user: adclick, password: "{ADCLICK_PASSWORD}", permissions: {permissions} }}
      {{ nkey: {adclick_nkey}, permissions: {permissions} }}
      {{ nkey: {publisher_nkey}, permissions: {{ publish: ["clicks.*"], subscribe: ["_INBOX.>"] }} }}
      {{ user: admin, password: admin }}
    ]
  }}
}}
"#
    )
}

struct Keys {
    adclick_seed: String,
    adclick_public: String,
    publisher_seed: String,
    publisher_public: String,
}

fn keys() -> Keys {
    let adclick = nkeys::KeyPair::new_user();
    let publisher = nkeys::KeyPair::new_user();
    Keys {
        adclick_seed: adclick.seed().expect("a new key has a seed"),
        adclick_public: adclick.public_key(),
        publisher_seed: publisher.seed().expect("a new key has a seed"),
        publisher_public: publisher.public_key(),
    }
}

async fn admin(nats: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .user_and_password("admin".into(), "admin".into())
        .connect(nats.url())
        .await
        .expect("admin connects");
    async_nats::jetstream::new(client)
}

async fn publisher(nats: &NatsServer, seed: &str) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .nkey(seed.to_string())
        .connect(nats.url())
        .await
        .expect("the publisher connects with its nkey");
    async_nats::jetstream::new(client)
}

fn password_env() -> Vec<(&'static str, &'static str)> {
    let mut env = SETTINGS.to_vec();
    env.push(("ADCLICK_NATS_USER", "adclick"));
    env.push(("ADCLICK_NATS_PASSWORD", ADCLICK_PASSWORD));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_exactly_the_documented_permissions_counts_are_exact() {
    let keys = keys();
    let nats = NatsServer::start_with_config(&server_config(
        ADCLICK_PUBLISH,
        &keys.adclick_public,
        &keys.publisher_public,
    ));
    let data = tempfile::tempdir().unwrap();
    // adclick authenticates with an nkey seed file.
    let seed_file = data.path().join("adclick.nk");
    std::fs::write(&seed_file, format!("{}\n", keys.adclick_seed)).unwrap();
    let mut env = SETTINGS.to_vec();
    let seed_path = seed_file.display().to_string();
    env.push(("ADCLICK_NATS_NKEY_SEED_FILE", &seed_path));
    let service = Adclick::start_settled(&nats, &data.path().join("adclick"), &env).await;

    let js = publisher(&nats, &keys.publisher_seed).await;
    let now = now_ms();
    let t0 = now.div_euclid(MINUTE) * MINUTE - 3 * MINUTE;
    let mut oracle = Oracle::default();
    let clicks: Vec<TestClick> = (0..300)
        .map(|i| TestClick {
            click_id: format!("c-{i}"),
            ad: format!("ad-{}", i % 7),
            ts: t0 + (i as i64 % 3) * MINUTE + i as i64,
            country: [Some("US"), Some("DE"), None][i % 3],
            ip: [Some("10.0.0.1"), Some("2001:db8::1")][i % 2],
        })
        .collect();
    count_and_publish(&js, &mut oracle, &clicks).await;
    // Rejects and a repeat go through the documented subjects too.
    let invalid: Vec<(String, String, Option<String>)> = (0..5)
        .map(|i| ("clicks.ad-1".to_string(), format!("{{not json {i}"), None))
        .collect();
    publish_raw(&js, &invalid).await;
    publish_raw(&js, &[("clicks.ad-1".into(), clicks[1].payload(), None)]).await;

    eventually(Duration::from_secs(30), || async {
        for ad in (0..7).map(|a| format!("ad-{a}")) {
            for filter in ["", "country=US", "ip_type=v6", "country=ZZ&ip_type=v4"] {
                count_matches(&service, &oracle, &ad, filter, t0, t0 + 3 * MINUTE).await?;
            }
        }
        Ok(())
    })
    .await;
    assert_eq!(oracle.total(), 300);
    let (status, top) = service
        .get(&format!(
            "/v1/ads/popular?count=7&window=3&at={}",
            t0 + 3 * MINUTE
        ))
        .await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(ranked(&top), oracle.top("", t0, t0 + 3 * MINUTE, 7));
    let inspect = admin(&nats).await;
    eventually(Duration::from_secs(20), || async {
        let rejected = stored_messages(&inspect, "CLICKS_REJECTED", "rejected.invalid").await;
        let feed = stored_messages(&inspect, "ADCLICK_AGG", "agg.>").await;
        if rejected == 5 && feed > 0 {
            Ok(())
        } else {
            Err(format!("{rejected} rejects stored, {feed} feed messages"))
        }
    })
    .await;
    assert_eq!(service.metric("adclick_events_invalid_total").await, 5.0);
    assert_eq!(service.metric("adclick_events_duplicate_total").await, 1.0);
    let log = service.log();
    assert!(
        !log.contains("Permissions Violation"),
        "the documented set is enough; log:\n{log}"
    );
    assert!(
        !log.contains(&keys.adclick_seed),
        "the seed must never be logged"
    );

    // `adclick loadgen` connects as serve does: with the publisher's seed
    // file, a publisher's permissions are all it needs.
    let publisher_seed = data.path().join("publisher.nk");
    std::fs::write(&publisher_seed, &keys.publisher_seed).unwrap();
    let publisher_seed = publisher_seed.display().to_string();
    let (status, log) = Adclick::run_command(
        &["loadgen", "--count", "300", "--rate", "0", "--ads", "3"],
        &nats.url(),
        &data.path().join("loadgen"),
        &[("ADCLICK_NATS_NKEY_SEED_FILE", &publisher_seed)],
    );
    assert!(status.success(), "loadgen log:\n{log}");
    assert!(log.contains("acked 300,"), "loadgen log:\n{log}");
    assert!(
        !log.contains("Permissions Violation"),
        "loadgen log:\n{log}"
    );
}

/// A JetStream request the server refuses is only a timeout to the client;
/// adclick must still say which subject it was refused, and stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_permission_stops_start_up_naming_the_subject() {
    let keys = keys();
    let missing = "$JS.API.STREAM.CREATE.CLICKS_REJECTED";
    let publish: Vec<&str> = ADCLICK_PUBLISH
        .iter()
        .copied()
        .filter(|s| *s != missing)
        .collect();
    let nats = NatsServer::start_with_config(&server_config(
        &publish,
        &keys.adclick_public,
        &keys.publisher_public,
    ));
    let data = tempfile::tempdir().unwrap();
    let (status, log) = Adclick::run_to_exit(&nats.url(), data.path(), &password_env());
    assert!(!status.success(), "start-up must fail; log:\n{log}");
    assert!(
        log.contains(&format!(
            "Permissions Violation for Publish to \"{missing}\""
        )),
        "the refused subject is named; log:\n{log}"
    );
    assert!(
        !log.contains(ADCLICK_PASSWORD),
        "the password must never be logged; log:\n{log}"
    );
}

/// A permission the pipeline needs only once clicks flow (publishing
/// rejects): the refusal is logged with its subject while adclick runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_publish_permission_is_logged_naming_the_subject() {
    let keys = keys();
    let publish: Vec<&str> = ADCLICK_PUBLISH
        .iter()
        .copied()
        .filter(|s| *s != "rejected.>")
        .collect();
    let nats = NatsServer::start_with_config(&server_config(
        &publish,
        &keys.adclick_public,
        &keys.publisher_public,
    ));
    let data = tempfile::tempdir().unwrap();
    let service = Adclick::start(&nats, data.path(), &password_env());
    service.wait_ready().await;
    let js = publisher(&nats, &keys.publisher_seed).await;
    publish_raw(&js, &[("clicks.ad-1".into(), "{not json".into(), None)]).await;
    eventually(Duration::from_secs(20), || async {
        let log = service.log();
        if log.contains("Permissions Violation for Publish to \"rejected.invalid\"")
            && log.contains("NATS-PERMISSIONS.md")
        {
            Ok(())
        } else {
            Err(format!("no refusal of rejected.invalid logged yet:\n{log}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_start_up_as_an_authorization_violation() {
    let keys = keys();
    let nats = NatsServer::start_with_config(&server_config(
        ADCLICK_PUBLISH,
        &keys.adclick_public,
        &keys.publisher_public,
    ));
    let data = tempfile::tempdir().unwrap();
    let mut env = SETTINGS.to_vec();
    env.push(("ADCLICK_NATS_USER", "adclick"));
    env.push(("ADCLICK_NATS_PASSWORD", "not-the-password"));
    let (status, log) = Adclick::run_to_exit(&nats.url(), data.path(), &env);
    assert!(!status.success(), "start-up must fail; log:\n{log}");
    assert!(
        log.contains("refused adclick's credentials (user adclick with a password")
            && log.contains("authorization violation"),
        "says the credentials were refused, and whose; log:\n{log}"
    );
    assert!(!log.contains("not-the-password"), "log:\n{log}");
}

/// Every ad's count of `[t0, t0 + 1 min)` from each of `members` equals the oracle's.
async fn all_exact(members: &[&Adclick], oracle: &Oracle, t0: i64) -> Result<(), String> {
    for service in members {
        for ad in (0..8).map(|a| format!("ad-{a}")) {
            count_matches(service, oracle, &ad, "", t0, t0 + MINUTE).await?;
        }
    }
    Ok(())
}

/// Many members with exactly the documented cluster set: leases, the
/// members watch, state shipped and restored at a handover (SIGTERM), and
/// questions routed between members all pass, and counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_with_exactly_the_documented_permissions_counts_are_exact() {
    let keys = keys();
    let publish: Vec<&str> = ADCLICK_PUBLISH
        .iter()
        .chain(CLUSTER_PUBLISH)
        .copied()
        .collect();
    let nats = NatsServer::start_with_config(&server_config_with(
        &publish,
        &["_INBOX.>", "adclick.query.>"],
        ", allow_responses: true",
        &keys.adclick_public,
        &keys.publisher_public,
    ));
    let data = tempfile::tempdir().unwrap();
    let member = |id: &str| {
        let mut env = password_env();
        env.extend([
            ("ADCLICK_PARTITIONS", "4"),
            ("ADCLICK_CLUSTER", "true"),
            ("ADCLICK_LEASE_TTL", "2s"),
            ("ADCLICK_STATE_SHIP_INTERVAL", "1s"),
            ("ADCLICK_MEMBER_ID", id),
        ]);
        Adclick::start(&nats, &data.path().join(id), &env)
    };
    let mut m0 = member("m0");
    let m1 = member("m1");
    m0.wait_ready().await;
    m1.wait_ready().await;

    let js = publisher(&nats, &keys.publisher_seed).await;
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 2 * MINUTE;
    let mut oracle = Oracle::default();
    let clicks: Vec<TestClick> = (0..200)
        .map(|i| TestClick {
            click_id: format!("k-{i}"),
            ad: format!("ad-{}", i % 8),
            ts: t0 + (i as i64 * 271) % MINUTE,
            country: None,
            ip: None,
        })
        .collect();
    count_and_publish(&js, &mut oracle, &clicks).await;
    // Every ad from both members: half the answers are routed to the other.
    let both = [&m0, &m1];
    eventually(Duration::from_secs(30), || all_exact(&both, &oracle, t0)).await;
    // A handover: m0 ships its partitions and leaves; m1 restores them.
    assert!(
        m0.terminate(Duration::from_secs(15)).success(),
        "m0 log:\n{}",
        m0.log()
    );
    let more: Vec<TestClick> = (200..260)
        .map(|i| TestClick {
            click_id: format!("k-{i}"),
            ad: format!("ad-{}", i % 8),
            ts: t0 + (i as i64 * 271) % MINUTE,
            country: None,
            ip: None,
        })
        .collect();
    count_and_publish(&js, &mut oracle, &more).await;
    let survivor = [&m1];
    eventually(Duration::from_secs(30), || {
        all_exact(&survivor, &oracle, t0)
    })
    .await;
    for (id, log) in [("m0", m0.log()), ("m1", m1.log())] {
        assert!(
            !log.contains("Permissions Violation"),
            "{id} was refused a permission the documented set lacks; log:\n{log}"
        );
    }
}

// ── operator mode: a .creds file ────────────────────────────────────────

/// base64url without padding, as JWTs are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT (v2) of `subject` with the `nats` claims given, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{}", now_ms()),
        "iat": now_ms() / 1000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let signature = issuer.sign(body.as_bytes()).expect("sign the JWT");
    format!("{body}.{}", base64url(&signature))
}

/// A `.creds` file's text: the user's JWT and seed, as `nsc` writes them.
fn creds(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

/// A user JWT of `account` allowed exactly `publish` and `subscribe`.
fn user_jwt(
    account: &nkeys::KeyPair,
    user: &nkeys::KeyPair,
    publish: &[&str],
    subscribe: &[&str],
) -> String {
    jwt(
        account,
        &user.public_key(),
        "user",
        serde_json::json!({
            "pub": { "allow": publish },
            "sub": { "allow": subscribe },
            "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    )
}

/// Operator mode (JWTs, as `nsc` and NGS use): adclick authenticates with a
/// `.creds` file whose user JWT carries exactly the documented one-node
/// permissions, and counts exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_in_operator_mode_counts_exactly() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let (adclick_user, publisher_user) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        serde_json::json!({ "type": "operator", "version": 2 }),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "ADS",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            },
            "type": "account", "version": 2
        }),
    );
    // The server's own account (JetStream needs one in operator mode).
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({ "type": "account", "version": 2 }),
    );
    let nats = NatsServer::start_with_config(&format!(
        "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {account}: {account_jwt}\n  {system}: {system_jwt}\n}}\n",
        account = account.public_key(),
        system = system.public_key(),
    ));
    let data = tempfile::tempdir().unwrap();
    let creds_file = data.path().join("adclick.creds");
    let adclick_seed = adclick_user.seed().expect("seed");
    std::fs::write(
        &creds_file,
        creds(
            &user_jwt(&account, &adclick_user, ADCLICK_PUBLISH, ADCLICK_SUBSCRIBE),
            &adclick_seed,
        ),
    )
    .unwrap();
    let creds_path = creds_file.display().to_string();
    let mut env = SETTINGS.to_vec();
    env.push(("ADCLICK_NATS_CREDS_FILE", &creds_path));
    let service = Adclick::start_settled(&nats, &data.path().join("adclick"), &env).await;

    let publisher_creds = creds(
        &user_jwt(&account, &publisher_user, &["clicks.*"], &["_INBOX.>"]),
        &publisher_user.seed().expect("seed"),
    );
    let client = async_nats::ConnectOptions::new()
        .credentials(&publisher_creds)
        .expect("the test's creds parse")
        .connect(nats.url())
        .await
        .expect("the publisher connects with its creds");
    let js = async_nats::jetstream::new(client);
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 2 * MINUTE;
    let mut oracle = Oracle::default();
    let clicks: Vec<TestClick> = (0..100)
        .map(|i| TestClick {
            click_id: format!("j-{i}"),
            ad: format!("ad-{}", i % 4),
            ts: t0 + i as i64 * 500,
            country: None,
            ip: None,
        })
        .collect();
    count_and_publish(&js, &mut oracle, &clicks).await;
    eventually(Duration::from_secs(30), || async {
        for ad in (0..4).map(|a| format!("ad-{a}")) {
            count_matches(&service, &oracle, &ad, "", t0, t0 + MINUTE).await?;
        }
        Ok(())
    })
    .await;
    let log = service.log();
    assert!(log.contains("creds file"), "log:\n{log}");
    assert!(
        !log.contains(&adclick_seed),
        "the seed must never be logged"
    );
    assert!(!log.contains("Permissions Violation"), "log:\n{log}");
}

/// A bare token (a server with `authorization { token }`): accepted, never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_accepted_and_never_logged() {
    let token = "adclick-test-token-0f3a";
    let nats = NatsServer::start_with_config(&format!("authorization {{ token: \"{token}\" }}\n"));
    let data = tempfile::tempdir().unwrap();
    let mut env = SETTINGS.to_vec();
    env.push(("ADCLICK_NATS_TOKEN", token));
    let service = Adclick::start(&nats, data.path(), &env);
    service.wait_ready().await;
    let log = service.log();
    assert!(log.contains("with a token"), "log:\n{log}");
    assert!(
        !log.contains(token),
        "the token must never be logged; log:\n{log}"
    );
    // Without it, the server refuses the login, and start-up says so.
    let (status, log) = Adclick::run_to_exit(&nats.url(), &data.path().join("no-token"), SETTINGS);
    assert!(!status.success(), "log:\n{log}");
    assert!(
        log.contains("refused adclick's credentials (no credentials"),
        "log:\n{log}"
    );
}
