//! The `ip` field's text → [`IpType`]: which address family it is, read
//! exactly as `text.parse::<std::net::IpAddr>()` would (a property test holds
//! the two together), without building the address. The family is all the
//! pipeline keeps, and std's general parser cost more than the rest of
//! decoding a click.

use crate::click::IpType;

/// Classifies the `ip` field of a click (`None`: the field is absent).
pub fn ip_type_of(ip: Option<&str>) -> IpType {
    ip.map_or(IpType::Unknown, |ip| classify(ip.as_bytes()))
}

/// Classifies the text of an `ip` field.
pub fn classify(text: &[u8]) -> IpType {
    if grammar::is_dotted_quad(text) {
        IpType::V4
    } else if text.contains(&b':') && grammar::is_ipv6(text) {
        // An IPv6 address always has a `:` (and fails the IPv4 reading
        // at its first group, so the order of the two costs little).
        IpType::V6
    } else {
        IpType::Unknown
    }
}

/// The grammar of IP address text as std's `IpAddr` parser reads it, as
/// recognisers over bytes (they say where a form ends, nothing more).
///
/// std reads greedily, never backtracking into a part it has read: a number
/// is the longest run of digits, and fails if that run is too long. The
/// recognisers do the same, so they accept exactly what std accepts.
mod grammar {
    /// Length of the run of bytes at `at` that `digit` accepts.
    fn run(text: &[u8], at: usize, digit: fn(&u8) -> bool) -> usize {
        text.get(at..)
            .map_or(0, |rest| rest.iter().take_while(|b| digit(b)).count())
    }

    /// Where the IPv4 address starting at `at` ends: four decimal octets
    /// joined by `.`, each 1 to 3 digits, at most 255, and no leading zero
    /// (`01` would be octal elsewhere, so std refuses it).
    pub(crate) fn dotted_quad_at(text: &[u8], mut at: usize) -> Option<usize> {
        for octet in 0..4 {
            if octet > 0 {
                if text.get(at) != Some(&b'.') {
                    return None;
                }
                at += 1;
            }
            let start = at;
            let mut value = 0u32;
            while let Some(d @ b'0'..=b'9') = text.get(at) {
                if at - start == 3 {
                    return None; // a fourth digit: std reads the whole run, and refuses it
                }
                value = value * 10 + u32::from(d - b'0');
                at += 1;
            }
            let digits = at - start;
            if digits == 0 || value > 255 || (digits > 1 && text[start] == b'0') {
                return None;
            }
        }
        Some(at)
    }

    /// Whether the whole of `text` is an IPv4 address: what
    /// `dotted_quad_at(text, 0) == Some(text.len())` says, with no loop over
    /// digits: each octet's three possible digits are read at once and its
    /// length (1 to 3) chosen arithmetically, because the places of the dots
    /// vary from address to address and branching on them mispredicts.
    pub(crate) fn is_dotted_quad(text: &[u8]) -> bool {
        if !(7..=15).contains(&text.len()) {
            return false;
        }
        // Past the text reads as a non-digit (which ends an octet).
        let byte = |at: usize| text.get(at).copied().unwrap_or(0);
        let digit = |at: usize| u32::from(byte(at).wrapping_sub(b'0'));
        let (mut at, mut ok) = (0usize, true);
        for octet in 0..4 {
            if octet > 0 {
                ok &= byte(at) == b'.';
                at += 1;
            }
            let (a, b, c) = (digit(at), digit(at + 1), digit(at + 2));
            let two = b < 10;
            let three = two & (c < 10);
            let value = if three {
                a * 100 + b * 10 + c
            } else if two {
                a * 10 + b
            } else {
                a
            };
            // A fourth digit is caught by the dot (or the end) expected after.
            ok &= (a < 10) & (value <= 255) & ((a != 0) | !two);
            at += 1 + usize::from(two) + usize::from(three);
        }
        ok & (at == text.len())
    }

    /// Reads up to `limit` groups from `at`, `:` between them: each 1 to 4
    /// hex digits, or, while two groups are still free, an IPv4 address
    /// that counts as two and ends the run. Returns (groups, whether the
    /// last was IPv4) and moves `at` past what was read.
    fn groups(text: &[u8], at: &mut usize, limit: usize) -> (usize, bool) {
        for i in 0..limit {
            let mut next = *at;
            if i > 0 {
                if text.get(next) != Some(&b':') {
                    return (i, false);
                }
                next += 1;
            }
            if i + 1 < limit {
                if let Some(end) = dotted_quad_at(text, next) {
                    *at = end;
                    return (i + 2, true);
                }
            }
            let digits = run(text, next, u8::is_ascii_hexdigit);
            if digits == 0 || digits > 4 {
                return (i, false);
            }
            *at = next + digits;
        }
        (limit, false)
    }

    /// Whether the whole of `text` is an IPv6 address: eight groups, or
    /// fewer with one `::` standing for at least one zero group; an IPv4
    /// address may only end it.
    pub(crate) fn is_ipv6(text: &[u8]) -> bool {
        let mut at = 0;
        let (head, head_ends_v4) = groups(text, &mut at, 8);
        if head == 8 {
            return at == text.len();
        }
        if head_ends_v4 || !text.get(at..).is_some_and(|rest| rest.starts_with(b"::")) {
            return false;
        }
        at += 2;
        groups(text, &mut at, 7 - head);
        at == text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_types() {
        assert_eq!(ip_type_of(Some("10.0.0.1")), IpType::V4);
        assert_eq!(ip_type_of(Some("::1")), IpType::V6);
        assert_eq!(ip_type_of(Some("nope")), IpType::Unknown);
        assert_eq!(ip_type_of(None), IpType::Unknown);
        for (text, want) in [
            ("0.0.0.0", IpType::V4),
            ("255.255.255.255", IpType::V4),
            ("256.1.1.1", IpType::Unknown),
            ("01.1.1.1", IpType::Unknown),
            ("1.1.1", IpType::Unknown),
            ("1.1.1.1.", IpType::Unknown),
            ("1.1.1.1.1", IpType::Unknown),
            ("1..1.1", IpType::Unknown),
            ("1.1.1.0001", IpType::Unknown),
            ("::ffff:1.2.3.4", IpType::V6),
            ("1:2:3:4:5:6:7::", IpType::V6),
            ("1.2.3.4:80", IpType::Unknown),
            ("99999999999999999999999.1.1.1", IpType::Unknown),
            ("::99999999999999999999999", IpType::Unknown),
            ("::1.2.3.99999999999999999999999", IpType::Unknown),
            ("", IpType::Unknown),
        ] {
            assert_eq!(ip_type_of(Some(text)), want, "{text}");
        }
    }

    /// std's own reading of an address, the oracle of [`classify`].
    fn std_ip_type(text: &str) -> IpType {
        match text.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => IpType::V4,
            Ok(std::net::IpAddr::V6(_)) => IpType::V6,
            Err(_) => IpType::Unknown,
        }
    }

    proptest::proptest! {
        /// Classifies exactly as std parses: random text over the characters
        /// addresses are made of, and near-addresses built from parts.
        #[test]
        fn ip_types_agree_with_std(
            text in "[0-9a-fA-F.:%x ]{0,20}",
            // Digits and dots only: every place of the dots, every octet length.
            quad in "[0-9.]{0,17}",
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("0".to_string()),
                    "[0-9]{1,4}",
                    "[0-9a-f]{1,5}",
                    proptest::strategy::Just(String::new()),
                ],
                0..10,
            ),
            sep in proptest::prop_oneof![
                proptest::strategy::Just("."),
                proptest::strategy::Just(":"),
                proptest::strategy::Just("::"),
            ],
            tail in proptest::option::of("[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}"),
        ) {
            proptest::prop_assert_eq!(ip_type_of(Some(&text)), std_ip_type(&text), "{}", text);
            proptest::prop_assert_eq!(ip_type_of(Some(&quad)), std_ip_type(&quad), "{}", quad);
            let mut built = parts.join(sep);
            if let Some(tail) = tail {
                built.push(':');
                built.push_str(&tail);
            }
            proptest::prop_assert_eq!(ip_type_of(Some(&built)), std_ip_type(&built), "{}", built);
        }
    }
}
