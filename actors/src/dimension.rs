//! Extra dimensions: filters on top-level string fields of a click that the
//! configuration declares (`device`, `placement`, …), beside the built-in
//! `country` and `ip_type`.
//!
//! Three pieces:
//! - [`ExtraDimension`] and [`check_name`]: what the configuration declares.
//! - Value codes ([`intern`], [`lookup`], [`resolve`]): a process-wide,
//!   append-only table of (dimension, value) pairs, so a [`crate::Filter`]
//!   stays a small `Copy` value (a `u32` per dimension) on the hot path and
//!   the text is resolved only at the edges (storage keys, query answers).
//!   Codes are never stored: files hold the text.
//! - [`DimensionValues`]: a partition's admission of values. The first `cap`
//!   distinct values of a dimension that the partition reads count as
//!   themselves; later new values count as [`OTHER`]. Admitted values are
//!   committed with the counts and reloaded at start, so the mapping is
//!   stable across restarts.
//!
//! Only admitted values (at most `cap` per dimension and partition), `other`
//! and `unknown` are ever interned, so the code table is bounded; queries
//! look codes up and never add any.

use crate::fast_hash::FastMap;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

/// Most extra dimensions a deployment may declare: a filter holds one value
/// code per dimension inline, and this keeps it 20 bytes.
pub const MAX_EXTRA_DIMENSIONS: usize = 4;
/// Longest value kept as itself, in bytes (UTF-8); a longer one counts as [`OTHER`].
pub const MAX_VALUE_BYTES: usize = 64;
/// Longest dimension name.
pub const MAX_NAME_CHARS: usize = 32;
/// The value of clicks whose value was not admitted (past the cap, or too long).
pub const OTHER: &str = "other";
/// The value of clicks without the field, or whose field is not a string (or is empty).
pub const UNKNOWN: &str = "unknown";
/// Default number of distinct values admitted per dimension and partition.
pub const DEFAULT_CAP: usize = 1_000;

/// Names an extra dimension may not take: the built-in dimensions, the
/// click's own fields, and the REST API's query parameters (a dimension is a
/// query parameter too), current and likely future ones.
pub const RESERVED_NAMES: &[&str] = &[
    "country",
    "ip_type",
    "click_id",
    "ad_id",
    "ts",
    "user_id",
    "ip",
    "from",
    "to",
    "minutes",
    "at",
    "count",
    "window",
    "filter",
    "limit",
    "offset",
    "cursor",
    "format",
    "partition",
];

/// A declared extra dimension: a top-level string field of the click.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraDimension {
    /// The field name, which is also the query parameter and the name in filters.
    pub name: String,
    /// Most distinct values admitted per partition.
    pub cap: usize,
}

/// Checks that `name` can be an extra dimension: `[A-Za-z][A-Za-z0-9_]*`, at
/// most 32 characters, and not reserved.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_CHARS;
    if !well_formed {
        return Err(format!(
            "`{name}` is not a valid dimension name: a letter, then letters, digits or `_`, \
             at most {MAX_NAME_CHARS} characters"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "`{name}` cannot be an extra dimension: it is a built-in dimension, a click field \
             or a query parameter (reserved: {})",
            RESERVED_NAMES.join(", ")
        ));
    }
    Ok(())
}

/// The process-wide (dimension, value) ↔ code table. Code 0 is never used
/// (it marks an empty slot in a filter).
struct CodeTable {
    /// `"<dimension>\0<value>"` → code: names never contain NUL, so the pair is unambiguous.
    codes: HashMap<Box<str>, u32>,
    /// code − 1 → (dimension, value).
    pairs: Vec<(Arc<str>, Arc<str>)>,
}

static CODES: LazyLock<RwLock<CodeTable>> = LazyLock::new(|| {
    RwLock::new(CodeTable {
        codes: HashMap::new(),
        pairs: Vec::new(),
    })
});

fn joined(dimension: &str, value: &str) -> String {
    let mut key = String::with_capacity(dimension.len() + 1 + value.len());
    key.push_str(dimension);
    key.push('\0');
    key.push_str(value);
    key
}

/// The code of (`dimension`, `value`), adding it if new. Call only for values
/// that are stored (admitted, `other`, `unknown`, or read from a file).
pub fn intern(dimension: &str, value: &str) -> u32 {
    let key = joined(dimension, value);
    if let Some(code) = read_codes().codes.get(key.as_str()) {
        return *code;
    }
    // The table only grows and holds plain data: a poisoned lock is still consistent.
    let mut table = CODES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(code) = table.codes.get(key.as_str()) {
        return *code;
    }
    table.pairs.push((Arc::from(dimension), Arc::from(value)));
    let code = table.pairs.len() as u32;
    table.codes.insert(key.into_boxed_str(), code);
    code
}

/// The code of (`dimension`, `value`) if any partition has stored it.
pub fn lookup(dimension: &str, value: &str) -> Option<u32> {
    read_codes()
        .codes
        .get(joined(dimension, value).as_str())
        .copied()
}

/// The (dimension, value) of a code.
pub fn resolve(code: u32) -> Option<(Arc<str>, Arc<str>)> {
    let index = usize::try_from(code).ok()?.checked_sub(1)?;
    read_codes().pairs.get(index).cloned()
}

fn read_codes() -> std::sync::RwLockReadGuard<'static, CodeTable> {
    CODES.read().unwrap_or_else(|p| p.into_inner())
}

/// How one click's value of one dimension was mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The value code the click counts under.
    pub code: u32,
    /// Whether the value counts as `other` because of the cap or its length.
    pub overflow: bool,
}

/// One dimension's admitted values in a partition.
struct Admitted {
    name: String,
    cap: usize,
    values: FastMap<Box<str>, u32>,
    other: u32,
    unknown: u32,
}

/// A partition's admission of extra-dimension values (see the module docs).
pub struct DimensionValues {
    dims: Vec<Admitted>,
}

impl DimensionValues {
    /// The admission state of a partition: `dims` as configured, and the
    /// (dimension, value) pairs its file says were admitted. Stored values of
    /// dimensions no longer declared are ignored; stored values beyond a cap
    /// that was lowered still count as themselves (the mapping never changes).
    pub fn new(dims: &[ExtraDimension], admitted: &[(String, String)]) -> DimensionValues {
        let mut out = DimensionValues {
            dims: dims
                .iter()
                .map(|d| Admitted {
                    name: d.name.clone(),
                    cap: d.cap,
                    values: FastMap::default(),
                    other: intern(&d.name, OTHER),
                    unknown: intern(&d.name, UNKNOWN),
                })
                .collect(),
        };
        for (name, value) in admitted {
            if let Some(dim) = out.dims.iter_mut().find(|d| d.name == *name) {
                let code = intern(name, value);
                dim.values.insert(value.as_str().into(), code);
            }
        }
        out
    }

    /// Whether no extra dimension is declared.
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// Maps the raw value of dimension `dim` (`None`: absent or not a
    /// string). A new value within the cap is admitted and pushed to
    /// `admitted` as (dimension, value), for the checkpoint.
    pub fn map(
        &mut self,
        dim: usize,
        raw: Option<&str>,
        admitted: &mut Vec<(String, String)>,
    ) -> Mapped {
        let Some(d) = self.dims.get_mut(dim) else {
            return Mapped {
                code: 0,
                overflow: false,
            };
        };
        let plain = |code| Mapped {
            code,
            overflow: false,
        };
        let value = match raw {
            None | Some("") | Some(UNKNOWN) => return plain(d.unknown),
            Some(OTHER) => return plain(d.other),
            Some(v) if v.len() > MAX_VALUE_BYTES => {
                return Mapped {
                    code: d.other,
                    overflow: true,
                }
            }
            Some(v) => v,
        };
        if let Some(code) = d.values.get(value) {
            return plain(*code);
        }
        if d.values.len() >= d.cap {
            return Mapped {
                code: d.other,
                overflow: true,
            };
        }
        let code = intern(&d.name, value);
        d.values.insert(value.into(), code);
        admitted.push((d.name.clone(), value.to_string()));
        plain(code)
    }

    /// Values admitted for dimension `dim` so far.
    pub fn admitted(&self, dim: usize) -> usize {
        self.dims.get(dim).map_or(0, |d| d.values.len())
    }
}

/// A filter's extra-dimension value codes: up to [`MAX_EXTRA_DIMENSIONS`],
/// ascending, then zeros. Each code names its dimension too, so the order
/// needs no configuration and equal filters are equal bit for bit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct ExtraCodes([u32; MAX_EXTRA_DIMENSIONS]);

impl ExtraCodes {
    /// No extra dimension.
    pub const NONE: ExtraCodes = ExtraCodes([0; MAX_EXTRA_DIMENSIONS]);

    /// The codes in canonical order; `None` if there are more than fit.
    pub fn from_codes(codes: impl IntoIterator<Item = u32>) -> Option<ExtraCodes> {
        let mut out = [0u32; MAX_EXTRA_DIMENSIONS];
        let mut n = 0;
        for code in codes.into_iter().filter(|c| *c != 0) {
            *out.get_mut(n)? = code;
            n += 1;
        }
        out[..n].sort_unstable();
        Some(ExtraCodes(out))
    }

    /// The codes of a click's values (one per declared dimension, in
    /// configuration order) that the set `mask` keeps.
    #[inline]
    pub fn pick(values: &[u32; MAX_EXTRA_DIMENSIONS], mask: u8) -> ExtraCodes {
        let mut out = [0u32; MAX_EXTRA_DIMENSIONS];
        let mut n = 0;
        for (i, code) in values.iter().enumerate() {
            if mask & (1 << i) != 0 && *code != 0 {
                out[n] = *code;
                n += 1;
            }
        }
        out[..n].sort_unstable();
        ExtraCodes(out)
    }

    /// Whether no extra dimension is constrained.
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }

    /// The codes, without the empty slots.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied().filter(|c| *c != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device(cap: usize) -> Vec<ExtraDimension> {
        vec![ExtraDimension {
            name: "t_device".into(),
            cap,
        }]
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("device").is_ok());
        assert!(check_name("deviceType_2").is_ok());
        for bad in ["", "2x", "a-b", "a=b", "é", &"x".repeat(33)] {
            assert!(
                check_name(bad).unwrap_err().contains("not a valid"),
                "{bad}"
            );
        }
        for reserved in ["country", "ip_type", "from", "window", "click_id"] {
            assert!(
                check_name(reserved).unwrap_err().contains("cannot be"),
                "{reserved}"
            );
        }
    }

    #[test]
    fn codes_round_trip_and_lookups_never_add() {
        let code = intern("t_codes", "ios");
        assert_ne!(code, 0);
        assert_eq!(intern("t_codes", "ios"), code);
        assert_eq!(lookup("t_codes", "ios"), Some(code));
        assert_ne!(intern("t_codes2", "ios"), code, "per dimension");
        let (d, v) = resolve(code).unwrap();
        assert_eq!((&*d, &*v), ("t_codes", "ios"));
        assert_eq!(lookup("t_codes", "never-stored"), None);
        assert_eq!(lookup("t_codes", "never-stored"), None);
        assert!(resolve(0).is_none());
    }

    #[test]
    fn special_values() {
        let mut v = DimensionValues::new(&device(1), &[]);
        let mut new = Vec::new();
        let unknown = intern("t_device", UNKNOWN);
        let other = intern("t_device", OTHER);
        assert_eq!(v.map(0, None, &mut new).code, unknown);
        assert_eq!(v.map(0, Some(""), &mut new).code, unknown);
        assert_eq!(v.map(0, Some("unknown"), &mut new).code, unknown);
        let literal = v.map(0, Some("other"), &mut new);
        assert_eq!((literal.code, literal.overflow), (other, false));
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let too_long = v.map(0, Some(&long), &mut new);
        assert_eq!((too_long.code, too_long.overflow), (other, true));
        assert!(new.is_empty(), "none of those uses a place under the cap");
        let longest = "y".repeat(MAX_VALUE_BYTES);
        assert_ne!(v.map(0, Some(&longest), &mut new).code, other);
        assert_eq!(new.len(), 1);
    }

    #[test]
    fn admitted_values_survive_a_reload() {
        let mut first = DimensionValues::new(&device(2), &[]);
        let mut new = Vec::new();
        let a = first.map(0, Some("a"), &mut new);
        let b = first.map(0, Some("b"), &mut new);
        let c = first.map(0, Some("c"), &mut new);
        assert!(c.overflow);
        assert_eq!(
            new,
            vec![
                ("t_device".to_string(), "a".to_string()),
                ("t_device".to_string(), "b".to_string())
            ]
        );
        // As the partition restarts from its file: same values, same buckets.
        let mut again = DimensionValues::new(&device(2), &new);
        let mut more = Vec::new();
        assert_eq!(again.map(0, Some("c"), &mut more), c);
        assert_eq!(again.map(0, Some("b"), &mut more), b);
        assert_eq!(again.map(0, Some("a"), &mut more), a);
        assert!(more.is_empty());
        // A lowered cap keeps what was admitted; a dropped dimension is ignored.
        let lowered = DimensionValues::new(&device(1), &new);
        assert_eq!(lowered.admitted(0), 2);
        let none = DimensionValues::new(&[], &new);
        assert!(none.is_empty());
    }

    #[test]
    fn codes_are_canonical() {
        let x = ExtraCodes::from_codes([9, 0, 3]).unwrap();
        assert_eq!(x, ExtraCodes::from_codes([3, 9]).unwrap());
        assert_eq!(x.iter().collect::<Vec<_>>(), vec![3, 9]);
        assert!(ExtraCodes::from_codes([1, 2, 3, 4, 5]).is_none());
        assert_eq!(ExtraCodes::pick(&[9, 4, 3, 0], 0b101), x);
        assert_eq!(ExtraCodes::pick(&[9, 4, 3, 0], 0), ExtraCodes::NONE);
        assert!(ExtraCodes::NONE.is_empty());
    }

    proptest! {
        /// The cap logic equals a naive model: the first `cap` distinct
        /// ordinary values count as themselves, everything else as the model says.
        #[test]
        fn admission_equals_a_naive_model(
            values in prop::collection::vec(prop::option::of(0u8..12), 0..60),
            cap in 1usize..6,
        ) {
            let dims = vec![ExtraDimension { name: "t_model".into(), cap }];
            let mut real = DimensionValues::new(&dims, &[]);
            let mut new = Vec::new();
            let mut model: Vec<String> = Vec::new();
            for v in &values {
                let text = v.map(|v| match v {
                    10 => "other".to_string(),
                    11 => String::new(),
                    v => format!("v{v}"),
                });
                let got = real.map(0, text.as_deref(), &mut new);
                let (want, overflow) = match text.as_deref() {
                    None | Some("") => (UNKNOWN.to_string(), false),
                    Some("other") => (OTHER.to_string(), false),
                    Some(t) if model.iter().any(|m| m == t) => (t.to_string(), false),
                    Some(t) if model.len() < cap => { model.push(t.to_string()); (t.to_string(), false) }
                    Some(_) => (OTHER.to_string(), true),
                };
                let (d, v) = resolve(got.code).unwrap();
                prop_assert_eq!((&*d, &*v, got.overflow), ("t_model", want.as_str(), overflow));
            }
            let admitted: Vec<String> = new.into_iter().map(|(_, v)| v).collect();
            prop_assert_eq!(admitted, model);
        }
    }
}
