//! The `Range` request header (RFC 9110 §14.1.2) for byte ranges of a representation of
//! known size: what a request asks for, and whether any of it can be served.

/// Most ranges one request may ask for; more and the whole file is sent instead (RFC 9110
/// lets a server ignore a Range header, and a long list of tiny ranges is a known way to
/// make a server do much work for little).
pub const MAX_RANGES: usize = 32;

/// What a `Range` header asks of a file of a given size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable header (absent, another unit, malformed, too many ranges): send it all.
    Full,
    /// Byte ranges `[start, end)`, each non-empty and within the file, in the order asked.
    Partial(Vec<(u64, u64)>),
    /// Well-formed, but no range overlaps the file: 416.
    Unsatisfiable,
}

/// Parses `header` (e.g. `bytes=0-499, -500`) against a file of `size` bytes.
pub fn parse(header: &str, size: u64) -> Ranges {
    let Some(specs) = header.trim().strip_prefix("bytes=") else { return Ranges::Full };
    let mut out = Vec::new();
    let mut specs_seen = 0;
    for spec in specs.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            // RFC 9110's list syntax allows empty elements ("bytes=0-1,,2-3").
            continue;
        }
        specs_seen += 1;
        if specs_seen > MAX_RANGES {
            return Ranges::Full;
        }
        let Some((first, last)) = spec.split_once('-') else { return Ranges::Full };
        let (first, last) = (first.trim(), last.trim());
        let range = if first.is_empty() {
            // A suffix: the last N bytes.
            let Some(n) = number(last) else { return Ranges::Full };
            (n > 0 && size > 0).then(|| (size - n.min(size), size))
        } else {
            let Some(a) = number(first) else { return Ranges::Full };
            let b = if last.is_empty() {
                u64::MAX
            } else {
                match number(last) {
                    Some(b) if b >= a => b,
                    _ => return Ranges::Full,
                }
            };
            (a < size).then(|| (a, b.saturating_add(1).min(size)))
        };
        out.extend(range);
    }
    match (specs_seen, out.is_empty()) {
        (0, _) => Ranges::Full,
        (_, true) => Ranges::Unsatisfiable,
        (_, false) => Ranges::Partial(out),
    }
}

/// Digits only (no sign, no spaces inside), as the grammar's `1*DIGIT`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_suffix_and_open_ranges() {
        assert_eq!(parse("bytes=0-499", 1000), Ranges::Partial(vec![(0, 500)]));
        assert_eq!(parse("bytes=500-", 1000), Ranges::Partial(vec![(500, 1000)]));
        assert_eq!(parse("bytes=-300", 1000), Ranges::Partial(vec![(700, 1000)]));
        assert_eq!(parse("bytes=-3000", 1000), Ranges::Partial(vec![(0, 1000)]));
        assert_eq!(parse("bytes=900-5000", 1000), Ranges::Partial(vec![(900, 1000)]));
        assert_eq!(parse("bytes= 0-0 , 2-3", 10), Ranges::Partial(vec![(0, 1), (2, 4)]));
    }

    #[test]
    fn unsatisfiable_only_when_no_range_overlaps() {
        assert_eq!(parse("bytes=1000-", 1000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=1000-2000, 5-6", 1000), Ranges::Partial(vec![(5, 7)]));
        assert_eq!(parse("bytes=-0", 1000), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-5", 0), Ranges::Unsatisfiable);
    }

    #[test]
    fn malformed_or_foreign_headers_mean_the_whole_file() {
        for h in ["items=0-1", "bytes=", "bytes=a-b", "bytes=5-1", "bytes=--1", "bytes=1", "bytes=+1-2", "0-1"] {
            assert_eq!(parse(h, 1000), Ranges::Full, "{h}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse(&many, 1000), Ranges::Full);
    }

    proptest! {
        #[test]
        fn every_range_served_is_inside_the_file_and_non_empty(header in "bytes=[0-9, -]{0,40}", size in 0u64..5000) {
            if let Ranges::Partial(rs) = parse(&header, size) {
                for (a, b) in rs {
                    prop_assert!(a < b && b <= size, "{header}: {a}..{b} of {size}");
                }
            }
        }
    }
}
