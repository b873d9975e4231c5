//! Where the process logs go and how they look: text for a person (the
//! default), or one JSON object a line for a log collector
//! (`ADCLICK_LOG_FORMAT=json`), always on standard error, filtered by
//! `RUST_LOG` (default `info`).
//!
//! Chosen by an environment variable, not a configuration key: logging
//! starts before the configuration is read, so that reading it can log.

/// The variable that chooses the format.
pub const LOG_FORMAT_VAR: &str = "ADCLICK_LOG_FORMAT";

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line of text an event (tracing-subscriber's full format).
    #[default]
    Text,
    /// One JSON object an event: `timestamp`, `level`, `fields` (with
    /// `message`), `target`, and the spans when inside one.
    Json,
}

/// An `ADCLICK_LOG_FORMAT` that names no format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{LOG_FORMAT_VAR} must be `text` or `json`, not `{0}`")]
pub struct UnknownLogFormat(pub String);

impl LogFormat {
    /// The format a value of `ADCLICK_LOG_FORMAT` names (unset or empty:
    /// text; case and surrounding blanks do not matter).
    pub fn from_setting(value: Option<&str>) -> Result<LogFormat, UnknownLogFormat> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(_) => Err(UnknownLogFormat(value.unwrap_or_default().to_string())),
        }
    }

    /// The format the environment asks for.
    pub fn from_env() -> Result<LogFormat, UnknownLogFormat> {
        match std::env::var(LOG_FORMAT_VAR) {
            Ok(value) => LogFormat::from_setting(Some(&value)),
            Err(std::env::VarError::NotPresent) => Ok(LogFormat::Text),
            Err(std::env::VarError::NotUnicode(raw)) => {
                Err(UnknownLogFormat(raw.to_string_lossy().into_owned()))
            }
        }
    }
}

/// Installs the global subscriber: `format`, standard error, `RUST_LOG`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a person at a terminal, not in a file or a pipe.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // No colour codes inside JSON strings.
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_unless_json_is_asked_and_anything_else_is_refused() {
        assert_eq!(LogFormat::from_setting(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_setting(Some("")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_setting(Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_setting(Some(" JSON ")), Ok(LogFormat::Json));
        let refused = LogFormat::from_setting(Some("yaml")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "ADCLICK_LOG_FORMAT must be `text` or `json`, not `yaml`"
        );
    }
}
