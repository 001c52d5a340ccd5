//! Durations as users write them: `500ms`, `30s`, `5m`, `1h30m`, `2d`.

use std::time::Duration;

/// Parses `1h30m`-style durations: one or more `<digits><unit>` parts, units in strictly
/// decreasing order (`d h m s ms`), as Go and Terraform accept them.
pub fn parse(text: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let hint = "write a duration such as `500ms`, `30s`, `5m` or `1h30m`";
    if text.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_unit = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; {hint}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(if unit.is_empty() {
                format!("`{text}` has no unit; {hint}")
            } else {
                format!("`{text}` has an unknown unit `{unit}`; units are d, h, m, s and ms")
            });
        };
        if last_unit != usize::MAX && index <= last_unit {
            return Err(format!(
                "`{text}`: units must go from largest to smallest, each once"
            ));
        }
        last_unit = index;
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total))
}

/// The short human form: `1h30m`, `2m5s`, `1.5s`, `750ms`, `0s`.
pub fn format(d: Duration) -> String {
    let total = d.as_millis();
    if total == 0 {
        return "0s".into();
    }
    if total < 1000 {
        return format!("{total}ms");
    }
    let mut out = String::new();
    let mut rest = total;
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    let (secs, frac) = (rest / 1000, rest % 1000);
    if frac > 0 {
        let frac = format!("{frac:03}");
        out.push_str(&format!("{secs}.{}s", frac.trim_end_matches('0')));
    } else if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_forms() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse("1d2h3m4s5ms").unwrap(),
            Duration::from_millis(93_784_005)
        );
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_malformed() {
        let bad = [
            "",
            "5",
            "m",
            "5 m",
            "1.5s",
            "5x",
            "30m1h",
            "1m1m",
            "-5s",
            "99999999999999999999d",
        ];
        for bad in bad {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["500ms", "30s", "5m", "1h30m", "2d", "1m5s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(61_250)), "1m1.25s");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
