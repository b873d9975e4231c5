//! `adclick status`: a running service's `GET /v1/status` as a table a
//! person reads (readiness, closed and final minutes, totals, then a row a
//! partition), or the body as is with `--json`.
//!
//! The table is a pure function of the body ([`render`]), so what it shows
//! is tested without a service.

use crate::gateway::body::{PartitionRow, ServiceStatus};
use adclick_actors::time::parse_rfc3339;
use std::net::SocketAddr;
use std::time::Duration;

/// The exit code when the service answers but is not ready.
pub const EXIT_NOT_READY: u8 = 3;

/// How long to wait for the whole answer: a service that takes longer is
/// reported, not waited for.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `adclick status`.
#[derive(clap::Args, Clone, Debug)]
pub struct StatusArgs {
    /// The service's base URL, http:// only (https is not supported: for a
    /// TLS listener use e.g. `curl https://…/v1/status`). Default:
    /// http://$ADCLICK_HTTP_ADDR, else http://127.0.0.1:8080.
    #[arg(long)]
    pub url: Option<String>,
    /// API token, sent as `Authorization: Bearer <token>` (for a service
    /// with `api_token_sha256` set). Prefer the variable: other users of
    /// the machine can read a command line.
    #[arg(long, env = "ADCLICK_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the body of GET /v1/status as is (JSON) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What the service said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every partition it should run answers queries.
    Ready,
    /// Some partition is still recovering (or not yet started).
    NotReady,
}

/// Why there is no status to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No answer: refused, unknown host, closed early, timed out.
    #[error("cannot reach adclick at {url}: {reason} (is `adclick serve` running there? set --url or ADCLICK_HTTP_ADDR)")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What went wrong, as the client saw it.
        reason: String,
    },
    /// 401 or 403: the service keeps its API behind tokens.
    #[error("{url} refused the request ({status}): {hint}")]
    Refused {
        /// The URL asked.
        url: String,
        /// 401 or 403.
        status: u16,
        /// What to do about it.
        hint: &'static str,
    },
    /// Another status than 200.
    #[error("{url}/v1/status answered {status}: {body}")]
    BadStatus {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// 200, but not a status body (another service on that port?).
    #[error("{url}/v1/status did not answer a status body (is it adclick?): {reason}")]
    NotAStatus {
        /// The URL asked.
        url: String,
        /// The JSON error.
        reason: String,
    },
}

/// The URL when `--url` is absent: the address `adclick serve` listens on
/// by the same variable, a wildcard address read as this host.
pub fn default_url(http_addr: Option<&str>) -> String {
    match http_addr.map(str::trim).filter(|a| !a.is_empty()) {
        Some(addr) => match addr.parse::<SocketAddr>() {
            Ok(socket) if socket.ip().is_unspecified() => {
                format!("http://127.0.0.1:{}", socket.port())
            }
            _ => format!("http://{addr}"),
        },
        None => "http://127.0.0.1:8080".to_string(),
    }
}

/// Asks the service, prints the table (or the body with `--json`) on
/// standard output, and says whether it is ready.
pub async fn run(args: &StatusArgs) -> Result<Readiness, StatusError> {
    let url = match &args.url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => default_url(std::env::var("ADCLICK_HTTP_ADDR").ok().as_deref()),
    };
    let (body, status) = fetch(&url, args.token.as_deref()).await?;
    if args.json {
        println!("{body}");
    } else {
        for line in render(&status) {
            println!("{line}");
        }
    }
    Ok(if status.ready {
        Readiness::Ready
    } else {
        Readiness::NotReady
    })
}

/// GET /v1/status: the body as sent, and as read.
async fn fetch(url: &str, token: Option<&str>) -> Result<(String, ServiceStatus), StatusError> {
    let authorization = token.map(|t| format!("Bearer {}", t.trim()));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("Authorization", value.as_str()))
        .collect();
    let unreachable = |reason: String| StatusError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let answer = tokio::time::timeout(
        ANSWER_TIMEOUT,
        crate::http::get_url(url, "/v1/status", &headers),
    )
    .await
    .map_err(|_| unreachable(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())))?
    .map_err(|e| unreachable(format!("{e:#}")))?;
    match answer.status {
        200 => {}
        401 => {
            return Err(StatusError::Refused {
                url: url.to_string(),
                status: 401,
                hint: "it needs an API token: pass --token or set ADCLICK_API_TOKEN",
            })
        }
        403 => {
            return Err(StatusError::Refused {
                url: url.to_string(),
                status: 403,
                hint: "it does not know this token",
            })
        }
        status => {
            return Err(StatusError::BadStatus {
                url: url.to_string(),
                status,
                body: answer.body.chars().take(300).collect(),
            })
        }
    }
    let status = serde_json::from_str(&answer.body).map_err(|e| StatusError::NotAStatus {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    Ok((answer.body, status))
}

/// What a partition is doing, as the table says it.
pub fn partition_state(row: &PartitionRow) -> &'static str {
    match (row.runs_here, row.ready) {
        (true, true) => "consuming",
        (true, false) => "recovering",
        (false, _) => "elsewhere",
    }
}

/// The lines `adclick status` prints for a status body: the service's
/// readiness, member and partition counts; closed and final minutes; the
/// event totals; a blank line; the table (a header and a row a partition).
pub fn render(status: &ServiceStatus) -> Vec<String> {
    let count = |state: &str| {
        status
            .partitions
            .iter()
            .filter(|p| partition_state(p) == state)
            .count()
    };
    let (consuming, recovering, elsewhere) =
        (count("consuming"), count("recovering"), count("elsewhere"));
    let mut first = vec![if status.ready { "READY" } else { "NOT READY" }.to_string()];
    if let Some(member) = &status.member {
        first.push(format!("member {member}"));
    }
    let total = status.partitions.len();
    let plural = if total == 1 { "" } else { "s" };
    let mut held =
        format!("{total} partition{plural}: {consuming} consuming here, {recovering} recovering");
    if elsewhere > 0 {
        held.push_str(&format!(", {elsewhere} elsewhere"));
    }
    first.push(held);
    let mut lines = vec![first.join(" · ")];
    lines.push(match (&status.closed_until, &status.final_until) {
        (Some(closed), Some(last_final)) => {
            format!("closed until {closed} · final until {last_final}")
        }
        _ => "no clicks yet: no minute closed".to_string(),
    });
    if let Some(t) = &status.totals {
        let r = &t.rejected;
        lines.push(format!(
            "since start: consumed {:.0} · counted {:.0} · repeats {:.0} · late corrections {:.0} · rejected {:.0} (invalid {:.0}, too late {:.0}, future {:.0})",
            t.consumed,
            t.counted,
            t.duplicate,
            t.late_corrections,
            r.invalid + r.too_late + r.future,
            r.invalid,
            r.too_late,
            r.future
        ));
    }
    lines.push(String::new());
    let now = parse_rfc3339(&status.now);
    let dash = || "-".to_string();
    let mut table = vec![[
        "PARTITION",
        "OWNER",
        "STATE",
        "WATERMARK",
        "LAG",
        "PENDING",
        "LAST COMMIT",
        "RESTARTS",
    ]
    .map(String::from)];
    for p in &status.partitions {
        let owner = if p.runs_here {
            "here".to_string()
        } else {
            p.owner.clone().unwrap_or_else(dash)
        };
        let commit_age = p
            .last_commit
            .as_deref()
            .and_then(parse_rfc3339)
            .zip(now)
            .map(|(at, now)| format!("{} ago", seconds_text((now - at) as f64 / 1000.0)));
        table.push([
            p.partition.to_string(),
            owner,
            partition_state(p).to_string(),
            p.watermark.clone().unwrap_or_else(dash),
            p.watermark_lag_seconds
                .map(seconds_text)
                .unwrap_or_else(dash),
            p.pending.map(|n| n.to_string()).unwrap_or_else(dash),
            commit_age.unwrap_or_else(dash),
            p.restarts.to_string(),
        ]);
    }
    lines.extend(aligned(&table));
    lines
}

/// Columns padded to their widest cell: numbers right-aligned, words left.
fn aligned<const N: usize>(table: &[[String; N]]) -> Vec<String> {
    // PARTITION, LAG, PENDING, LAST COMMIT, RESTARTS are numbers.
    const RIGHT: [usize; 5] = [0, 4, 5, 6, 7];
    let mut widths = [0usize; N];
    for row in table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    table
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let width = widths[i];
                    if RIGHT.contains(&i) {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// A span of seconds for a person: `0.4 s`, `12 min 05 s`, `3 h 07 min`.
pub fn seconds_text(seconds: f64) -> String {
    let sign = if seconds < 0.0 { "-" } else { "" };
    let s = seconds.abs();
    if s < 60.0 {
        format!("{sign}{s:.1} s")
    } else if s < 3600.0 {
        let whole = s as u64;
        format!("{sign}{} min {:02} s", whole / 60, whole % 60)
    } else {
        let minutes = (s / 60.0) as u64;
        format!("{sign}{} h {:02} min", minutes / 60, minutes % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"{
        "closed_until": "2026-12-07T06:45:00Z",
        "final_until": "2026-12-07T06:35:00Z",
        "member": "node-a",
        "now": "2026-12-07T06:45:30Z",
        "partitions": [
            {"partition": 0, "owner": "node-a", "runs_here": true, "ready": true,
             "watermark": "2026-12-07T06:45:28.500Z", "watermark_lag_seconds": 1.5,
             "pending": 12, "last_commit": "2026-12-07T06:45:29.600Z",
             "last_commit_seq": 900, "restarts": 0},
            {"partition": 1, "owner": "node-b", "runs_here": false, "ready": false,
             "watermark": "2026-12-07T06:40:00Z", "watermark_lag_seconds": 330.0,
             "restarts": 0},
            {"partition": 10, "runs_here": true, "ready": false, "restarts": 2}
        ],
        "ready": false,
        "totals": {"consumed": 1200.0, "counted": 1150.0, "duplicate": 12.0,
                   "late_corrections": 3.0,
                   "rejected": {"future": 2.0, "invalid": 2.0, "too_late": 1.0}}
    }"#;

    #[test]
    fn a_cluster_member_shows_each_partition_with_its_owner_and_state() {
        let status: ServiceStatus = serde_json::from_str(CLUSTER).unwrap();
        assert_eq!(
            render(&status),
            [
                "NOT READY · member node-a · 3 partitions: 1 consuming here, 1 recovering, 1 elsewhere",
                "closed until 2026-12-07T06:45:00Z · final until 2026-12-07T06:35:00Z",
                "since start: consumed 1200 · counted 1150 · repeats 12 · late corrections 3 · rejected 5 (invalid 2, too late 1, future 2)",
                "",
                "PARTITION  OWNER   STATE       WATERMARK                        LAG  PENDING  LAST COMMIT  RESTARTS",
                "        0  here    consuming   2026-12-07T06:45:28.500Z       1.5 s       12    0.4 s ago         0",
                "        1  node-b  elsewhere   2026-12-07T06:40:00Z      5 min 30 s        -            -         0",
                "       10  here    recovering  -                                  -        -            -         2",
            ]
        );
    }

    #[test]
    fn a_single_node_before_its_first_click() {
        let status: ServiceStatus = serde_json::from_str(
            r#"{"now": "2026-12-07T06:45:30Z", "ready": true, "partitions": [
                {"partition": 0, "runs_here": true, "ready": true, "pending": 0, "restarts": 0}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            render(&status),
            [
                "READY · 1 partition: 1 consuming here, 0 recovering",
                "no clicks yet: no minute closed",
                "",
                "PARTITION  OWNER  STATE      WATERMARK  LAG  PENDING  LAST COMMIT  RESTARTS",
                "        0  here   consuming  -            -        0            -         0",
            ]
        );
    }

    #[test]
    fn spans_read_as_seconds_minutes_or_hours() {
        assert_eq!(seconds_text(0.04), "0.0 s");
        assert_eq!(seconds_text(59.94), "59.9 s");
        assert_eq!(seconds_text(65.0), "1 min 05 s");
        assert_eq!(seconds_text(3600.0 * 3.0 + 420.0), "3 h 07 min");
        assert_eq!(seconds_text(-0.5), "-0.5 s");
    }

    #[test]
    fn the_default_url_is_where_serve_listens() {
        assert_eq!(default_url(None), "http://127.0.0.1:8080");
        assert_eq!(default_url(Some("10.0.0.5:9000")), "http://10.0.0.5:9000");
        assert_eq!(default_url(Some("0.0.0.0:8081")), "http://127.0.0.1:8081");
        assert_eq!(default_url(Some("")), "http://127.0.0.1:8080");
    }
}
