//! How adclick proves who it is to NATS (a creds file, an nkey seed,
//! user/password or a token) and how it checks the server (TLS with a custom
//! CA, a client certificate), from the `nats_*` configuration keys.
//!
//! Every process that connects (serve, loadgen, demo, rebuild, cluster
//! members) builds its connection from one [`NatsSecurity`], so they all
//! authenticate alike. Files are read and checked when the configuration is
//! loaded, so a missing or unreadable one stops start-up naming its key
//! rather than surfacing later as a connection that never succeeds. Secrets
//! are held in [`Secret`], whose `Debug` prints nothing of them.

use crate::config::ConfigError;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value: usable, never printed (its `Debug` is a placeholder).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for handing to the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Who adclick says it is to NATS. NATS takes one method per connection, so
/// the configuration may set only one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (the default: a loopback server without auth).
    #[default]
    None,
    /// A `.creds` file: a user JWT and its nkey seed (operator mode).
    Creds {
        /// The file it was read from (for messages).
        path: PathBuf,
        /// Its contents.
        contents: Secret,
    },
    /// An nkey seed (`SU…`), read from a file; the server knows the public key.
    NkeySeed {
        /// The file it was read from (for messages).
        path: PathBuf,
        /// The seed.
        seed: Secret,
    },
    /// A user name and password.
    UserPassword {
        /// The user (not secret: it appears in logs).
        user: String,
        /// The password.
        password: Secret,
    },
    /// A bare token.
    Token(Secret),
}

/// How the connection to NATS is encrypted and the server checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// A PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its private key (PEM files), for
    /// servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Refuse a connection without TLS. Implied by any TLS file: a CA or a
    /// client certificate configured means TLS is wanted.
    pub required: bool,
}

/// Everything about connecting to NATS beyond its URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsSecurity {
    /// Who adclick is.
    pub auth: NatsAuth,
    /// TLS.
    pub tls: NatsTls,
}

impl NatsSecurity {
    /// Reads the `nats_*` keys through `text` (a key → its value and where
    /// the value came from) and reads and checks the files they name.
    pub fn from_keys(
        text: impl Fn(&'static str) -> (String, String),
    ) -> Result<NatsSecurity, ConfigError> {
        let bad = |key: &'static str, problem: String| ConfigError::Bad {
            key: key.into(),
            source_name: text(key).1,
            problem,
        };
        let set = |key: &'static str| Some(text(key).0).filter(|v| !v.trim().is_empty());

        let mut methods: Vec<(&'static str, NatsAuth)> = Vec::new();
        if let Some(path) = set("nats_creds_file") {
            let path = PathBuf::from(path.trim());
            let contents = read_secret_file(&path).map_err(|p| bad("nats_creds_file", p))?;
            // Parsed now (JWT and seed blocks) so a wrong file is named at start-up.
            async_nats::ConnectOptions::new()
                .credentials(&contents)
                .map_err(|e| bad("nats_creds_file", format!("{}: {e}", path.display())))?;
            methods.push((
                "nats_creds_file",
                NatsAuth::Creds {
                    path,
                    contents: Secret(contents),
                },
            ));
        }
        if let Some(path) = set("nats_nkey_seed_file") {
            let path = PathBuf::from(path.trim());
            let seed = read_secret_file(&path).map_err(|p| bad("nats_nkey_seed_file", p))?;
            let seed = seed.trim().to_string();
            // The message never quotes the seed, only what is wrong with it.
            nkeys::KeyPair::from_seed(&seed).map_err(|e| {
                bad(
                    "nats_nkey_seed_file",
                    format!("{} does not hold an nkey seed: {e}", path.display()),
                )
            })?;
            methods.push((
                "nats_nkey_seed_file",
                NatsAuth::NkeySeed {
                    path,
                    seed: Secret(seed),
                },
            ));
        }
        match (set("nats_user"), set("nats_password")) {
            (Some(user), Some(password)) => methods.push((
                "nats_user",
                NatsAuth::UserPassword {
                    user: user.trim().to_string(),
                    password: Secret(password),
                },
            )),
            (Some(_), None) => {
                return Err(bad(
                    "nats_password",
                    "nats_user is set, so a password is needed".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "nats_user",
                    "nats_password is set, so a user is needed".into(),
                ))
            }
            (None, None) => {}
        }
        if let Some(token) = set("nats_token") {
            methods.push(("nats_token", NatsAuth::Token(Secret(token))));
        }
        if methods.len() > 1 {
            let keys: Vec<&str> = methods.iter().map(|(k, _)| *k).collect();
            return Err(bad(
                methods[1].0,
                format!(
                    "NATS takes one way to authenticate, but {} are set: keep one",
                    keys.join(" and ")
                ),
            ));
        }
        let auth = methods.pop().map(|(_, a)| a).unwrap_or_default();

        let ca_file = match set("nats_tls_ca_file") {
            Some(path) => {
                let path = PathBuf::from(path.trim());
                check_pem(&path, "CERTIFICATE").map_err(|p| bad("nats_tls_ca_file", p))?;
                Some(path)
            }
            None => None,
        };
        let client_cert = match (set("nats_tls_cert_file"), set("nats_tls_key_file")) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (PathBuf::from(cert.trim()), PathBuf::from(key.trim()));
                check_pem(&cert, "CERTIFICATE").map_err(|p| bad("nats_tls_cert_file", p))?;
                check_pem(&key, "PRIVATE KEY").map_err(|p| bad("nats_tls_key_file", p))?;
                Some((cert, key))
            }
            (Some(_), None) => {
                return Err(bad(
                    "nats_tls_key_file",
                    "nats_tls_cert_file is set, so its private key is needed".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(bad(
                    "nats_tls_cert_file",
                    "nats_tls_key_file is set, so its certificate is needed".into(),
                ))
            }
            (None, None) => None,
        };
        let required = match text("nats_tls_required").0.trim() {
            "true" => true,
            "false" | "" => false,
            other => {
                return Err(bad(
                    "nats_tls_required",
                    format!("`{other}` is not true or false"),
                ))
            }
        } || ca_file.is_some()
            || client_cert.is_some();
        Ok(NatsSecurity {
            auth,
            tls: NatsTls {
                ca_file,
                client_cert,
                required,
            },
        })
    }

    /// `options` with this authentication and TLS.
    pub fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> std::io::Result<async_nats::ConnectOptions> {
        let mut options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::Creds { contents, .. } => options.credentials(contents.expose())?,
            NatsAuth::NkeySeed { seed, .. } => options.nkey(seed.expose().to_string()),
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_string())
            }
            NatsAuth::Token(token) => options.token(token.expose().to_string()),
        };
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.tls.required))
    }

    /// What this connects with, for the start-up log: never a secret.
    pub fn describe(&self) -> String {
        let auth = match &self.auth {
            NatsAuth::None => "no credentials".to_string(),
            NatsAuth::Creds { path, .. } => format!("creds file {}", path.display()),
            NatsAuth::NkeySeed { path, .. } => format!("nkey seed file {}", path.display()),
            NatsAuth::UserPassword { user, .. } => format!("user {user} with a password"),
            NatsAuth::Token(_) => "a token".to_string(),
        };
        let tls = if self.tls.required {
            let mut parts = vec!["TLS required".to_string()];
            if let Some(ca) = &self.tls.ca_file {
                parts.push(format!("CA {}", ca.display()));
            }
            if let Some((cert, _)) = &self.tls.client_cert {
                parts.push(format!("client certificate {}", cert.display()));
            }
            parts.join(", ")
        } else {
            "TLS if the server asks".to_string()
        };
        format!("{auth}; {tls}")
    }
}

/// A secret file's text; the problem names the file, never its contents.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text)
}

/// Checks that `path` is readable and holds a PEM block whose label ends with
/// `label` (`CERTIFICATE`, `PRIVATE KEY`), so a wrong file is named at
/// start-up; the TLS library parses it properly when connecting.
fn check_pem(path: &Path, label: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let has_block = text.lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if has_block {
        Ok(())
    } else {
        Err(format!("{} holds no PEM `{label}` block", path.display()))
    }
}

/// `url` with any `user:password@` taken out, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = one.split_once("://").unwrap_or(("", one));
            let rest = match rest.split_once('@') {
                Some((_, host)) => format!("<credentials>@{host}"),
                None => rest.to_string(),
            };
            if scheme.is_empty() {
                rest
            } else {
                format!("{scheme}://{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&'static str, &str)]) -> Result<NatsSecurity, ConfigError> {
        let map: HashMap<&str, String> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        NatsSecurity::from_keys(|key| {
            (map.get(key).cloned().unwrap_or_default(), "the test".into())
        })
    }

    fn err(pairs: &[(&'static str, &str)]) -> String {
        load(pairs).unwrap_err().to_string()
    }

    #[test]
    fn nothing_set_is_no_credentials_and_optional_tls() {
        assert_eq!(load(&[]).unwrap(), NatsSecurity::default());
    }

    #[test]
    fn user_and_password_go_together_and_never_print() {
        let s = load(&[("nats_user", "adclick"), ("nats_password", "hunter2")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.describe().contains("hunter2"));
        assert!(err(&[("nats_user", "adclick")]).contains("`nats_password`"));
        assert!(err(&[("nats_password", "x")]).contains("`nats_user`"));
    }

    #[test]
    fn only_one_way_to_authenticate() {
        let e = err(&[
            ("nats_user", "a"),
            ("nats_password", "b"),
            ("nats_token", "t"),
        ]);
        assert!(e.contains("`nats_token`") && e.contains("one way"), "{e}");
    }

    #[test]
    fn missing_or_wrong_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let missing = missing.to_str().unwrap();
        for key in ["nats_creds_file", "nats_nkey_seed_file", "nats_tls_ca_file"] {
            let e = err(&[(key, missing)]);
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("cannot read"),
                "{e}"
            );
        }
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "SUAsecretbutwrong\n").unwrap();
        let junk = junk.to_str().unwrap();
        for key in ["nats_creds_file", "nats_nkey_seed_file", "nats_tls_ca_file"] {
            let e = err(&[(key, junk)]);
            assert!(e.contains(&format!("`{key}`")), "{e}");
            assert!(!e.contains("SUAsecret"), "a message quotes the secret: {e}");
        }
        assert!(err(&[("nats_tls_cert_file", junk)]).contains("`nats_tls_key_file`"));
        assert!(err(&[("nats_tls_required", "yes")]).contains("`nats_tls_required`"));
    }

    #[test]
    fn an_nkey_seed_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let path = dir.path().join("adclick.nk");
        std::fs::write(&path, format!("{seed}\n")).unwrap();
        let s = load(&[("nats_nkey_seed_file", path.to_str().unwrap())]).unwrap();
        match &s.auth {
            NatsAuth::NkeySeed { seed: got, .. } => assert_eq!(got.expose(), seed),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{s:?}").contains(&seed));
    }

    #[test]
    fn tls_files_imply_tls_required() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let s = load(&[("nats_tls_ca_file", ca.to_str().unwrap())]).unwrap();
        assert!(s.tls.required);
        assert!(load(&[("nats_tls_required", "true")]).unwrap().tls.required);
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redacted_url("nats://u:p@a:4222, tls://b:1"),
            "nats://<credentials>@a:4222,tls://b:1"
        );
        assert_eq!(redacted_url("127.0.0.1:4222"), "127.0.0.1:4222");
    }
}
