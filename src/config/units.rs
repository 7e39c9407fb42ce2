//! Parsing of durations (`30s`) and byte sizes (`4MiB`). Pure functions.

use super::raw::{DurationValue, SizeValue};
use std::time::Duration;

/// Parse `500ms`, `30s`, `5m`, `2h`, `1d` or a bare number of seconds.
pub fn parse_duration(value: &DurationValue) -> Result<Duration, String> {
    let text = match value {
        DurationValue::Seconds(s) => return Ok(Duration::from_secs(*s)),
        DurationValue::Text(t) => t.trim(),
        DurationValue::Other(v) => {
            return Err(format!(
                "`{}` is not a duration (use a number of seconds ≥ 0, or e.g. 500ms, 30s, 5m, 1h)",
                super::raw::written(v)
            ))
        }
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (use e.g. 500ms, 30s, 5m, 1h)"))?;
    let ms_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parse `1048576`, `64KiB`, `4MiB`, `1GiB`, `100KB`, `1MB`.
pub fn parse_size(value: &SizeValue) -> Result<u64, String> {
    let text = match value {
        SizeValue::Bytes(b) => return Ok(*b),
        SizeValue::Text(t) => t.trim(),
        SizeValue::Other(v) => {
            return Err(format!(
                "`{}` is not a size (use a number of bytes ≥ 0, or e.g. 64KiB, 4MiB)",
                super::raw::written(v)
            ))
        }
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (use e.g. 65536, 64KiB, 4MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("500ms", Some(500)),
            ("30s", Some(30_000)),
            ("30", Some(30_000)),
            ("5m", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("2d", Some(172_800_000)),
            ("1.5s", None),
            ("s", None),
            ("10y", None),
            ("-1s", None),
        ];
        for (input, want) in cases {
            let got = parse_duration(&DurationValue::Text((*input).into()))
                .ok()
                .map(|d| d.as_millis() as u64);
            assert_eq!(got, *want, "{input}");
        }
        assert_eq!(
            parse_duration(&DurationValue::Seconds(7)).unwrap(),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("64KiB", Some(65_536)),
            ("4MiB", Some(4 << 20)),
            ("1MB", Some(1_000_000)),
            ("1 GiB", Some(1 << 30)),
            ("4mb", None),
            ("KiB", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_size(&SizeValue::Text((*input).into())).ok(),
                *want,
                "{input}"
            );
        }
    }
}
