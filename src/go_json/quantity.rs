//! A Kubernetes resource quantity as Go's `resource.Quantity` writes it to
//! JSON after reading it (apimachinery v0.34): "0.5" becomes "500m",
//! "1024Mi" becomes "1Gi", "1.5Gi" becomes "1536Mi", while a string already
//! in a form Go keeps is written back as given (even "+1" or "01"). Pod
//! template hashes are computed over that JSON, so every quirk counts; the
//! tests compare with Go itself.

/// The quantity could not be read (Go's ErrFormatWrong, ErrSuffix,
/// ErrNumeric), or is beyond what this port handles (over 38 digits).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("quantity {0:?} cannot be read as Kubernetes reads quantities")]
pub struct QuantityError(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    DecimalExponent,
    BinarySi,
    DecimalSi,
}

/// Go's `json.Marshal` of the Quantity that `json.Unmarshal` reads from
/// the JSON string `input`.
pub fn canonical(input: &str) -> Result<String, QuantityError> {
    let err = || QuantityError(input.to_string());
    // Go trims surrounding white space before parsing.
    let s = input.trim();
    if s.is_empty() {
        return Err(err());
    }
    if s == "0" {
        return Ok(s.to_string());
    }
    let parsed = parse_string(s).ok_or_else(err)?;
    let (base, exponent, format) = interpret(parsed.suffix).ok_or_else(err)?;

    // The fast path of ParseQuantity: an int64 amount, which keeps the
    // string as given when it is already canonical-looking.
    let digits = parsed.num.len() + parsed.denom.len();
    let (mut scale, precision, mantissa): (i32, i32, i64) = match format {
        Format::DecimalExponent | Format::DecimalSi => (exponent, 18 - digits as i32, 1),
        Format::BinarySi if exponent >= 0 && parsed.denom.is_empty() => {
            let precision =
                15 - parsed.num.len() as i32 - ((exponent as f32) * 3.0 / 10.0) as i32 - 1;
            (0, precision, 1i64 << exponent)
        }
        Format::BinarySi => (0, -1, 1),
    };
    if precision >= 0 {
        scale -= parsed.denom.len() as i32;
        if scale >= -9 {
            let shifted = format!("{}{}", parsed.num, parsed.denom);
            let value: i64 = shifted.parse().map_err(|_| err())?;
            if let Some(result) = value.checked_mul(mantissa) {
                let keep = match format {
                    Format::BinarySi => exponent % 10 == 0 && value & 0x07 != 0,
                    _ => scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0'),
                };
                if keep {
                    return Ok(s.to_string());
                }
                let magnitude = u128::from(result.unsigned_abs());
                return Ok(render(parsed.positive, magnitude, -scale, format));
            }
        }
    }

    // The arbitrary-precision path.
    let (mut magnitude, mut dec_scale) = decimal(parsed.value).ok_or_else(err)?;
    let negative = parsed.value.starts_with('-');
    if base == 10 {
        dec_scale -= exponent;
    } else {
        let factor = 1u128.checked_shl(exponent as u32).ok_or_else(err)?;
        magnitude = match magnitude.checked_mul(factor) {
            Some(m) => m,
            // Beyond u128 with at most 19 fraction digits is beyond the cap
            // below (i64::MAX × 10^19 < u128::MAX), where Go ends too.
            None if dec_scale <= 19 => {
                u128::MAX / 10u128.pow(19) * 10u128.pow(dec_scale.max(0) as u32)
            }
            None => return Err(err()),
        };
    }
    // Non-zero values are rounded up (away from zero) to a nano unit.
    if magnitude != 0 && dec_scale > 9 {
        let divisor = pow10(dec_scale - 9).ok_or_else(err)?;
        magnitude = magnitude.div_ceil(divisor);
        dec_scale = 9;
    }
    let mut format = format;
    if format == Format::BinarySi {
        let max = u128::from(i64::MAX as u64);
        if cmp(magnitude, dec_scale, max, 0) == std::cmp::Ordering::Greater {
            (magnitude, dec_scale) = (max, 0);
        }
        if magnitude != 0 && cmp(magnitude, dec_scale, 1, 0) == std::cmp::Ordering::Less {
            format = Format::DecimalSi;
        }
    }
    Ok(render(!negative, magnitude, dec_scale, format))
}

/// The parts of a quantity string (Go's parseQuantityString).
struct Parsed<'a> {
    positive: bool,
    /// The number as written (sign, digits, point), without the suffix.
    value: &'a str,
    /// Integer digits without leading zeros ("0" if none).
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

fn parse_string(s: &str) -> Option<Parsed<'_>> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Some(Parsed {
            positive,
            value: "0",
            num: "0",
            denom: "",
            suffix: "",
        });
    }
    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos >= end {
        return Some(Parsed {
            positive,
            value: s,
            num: &s[num_start..],
            denom: "",
            suffix: "",
        });
    }
    let num = if pos == num_start {
        "0"
    } else {
        &s[num_start..pos]
    };
    let mut denom = "";
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[start..pos];
        if pos >= end {
            return Some(Parsed {
                positive,
                value: s,
                num,
                denom,
                suffix: "",
            });
        }
    }
    let value = &s[..pos];
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end {
        if !b[pos].is_ascii_digit() {
            return None;
        }
        pos += 1;
    }
    Some(Parsed {
        positive,
        value,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// A suffix: (base, exponent, format).
fn interpret(suffix: &str) -> Option<(i32, i32, Format)> {
    let decimal = |e| Some((10, e, Format::DecimalSi));
    let binary = |e| Some((2, e, Format::BinarySi));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let rest = suffix.strip_prefix(['e', 'E']).filter(|r| !r.is_empty())?;
            // Go's strconv.ParseInt (a leading '+' is allowed), kept as int32.
            let e: i64 = rest.parse().ok()?;
            Some((10, e as i32, Format::DecimalExponent))
        }
    }
}

/// A decimal string ("-01.50") as (magnitude, scale): value = magnitude ×
/// 10^-scale.
fn decimal(s: &str) -> Option<(u128, i32)> {
    let s = s.trim_start_matches(['-', '+']);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let magnitude = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some((magnitude, frac.len() as i32))
}

fn pow10(n: i32) -> Option<u128> {
    10u128.checked_pow(u32::try_from(n).ok()?)
}

/// Compares a × 10^-sa with b × 10^-sb.
fn cmp(a: u128, sa: i32, b: u128, sb: i32) -> std::cmp::Ordering {
    let (a, b) = if sa >= sb {
        (Some(a), pow10(sa - sb).and_then(|p| b.checked_mul(p)))
    } else {
        (pow10(sb - sa).and_then(|p| a.checked_mul(p)), Some(b))
    };
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        // Only the side that was scaled up can overflow, and it is the
        // larger one.
        (None, _) => std::cmp::Ordering::Greater,
        (_, None) => std::cmp::Ordering::Less,
    }
}

/// Go's CanonicalizeBytes of ±magnitude × 10^-scale.
fn render(positive: bool, mut magnitude: u128, scale: i32, format: Format) -> String {
    if magnitude == 0 {
        return "0".into();
    }
    let sign = if positive { "" } else { "-" };
    let mut format = format;
    if format == Format::BinarySi {
        if cmp(magnitude, scale, 1024, 0) == std::cmp::Ordering::Less {
            format = Format::DecimalSi;
        } else if scale > 0 {
            // Exact at scale 0 only if the fraction is all zeros.
            match pow10(scale) {
                Some(p) if magnitude.is_multiple_of(p) => magnitude /= p,
                _ => format = Format::DecimalSi,
            }
        } else if scale < 0 {
            match pow10(-scale).and_then(|p| magnitude.checked_mul(p)) {
                Some(m) => magnitude = m,
                None => format = Format::DecimalSi,
            }
        }
        if format == Format::BinarySi {
            let mut exponent = 0;
            while magnitude >= 1024 && magnitude.is_multiple_of(1024) {
                magnitude /= 1024;
                exponent += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                .get(exponent)
                .copied()
                .unwrap_or("");
            return format!("{sign}{magnitude}{suffix}");
        }
    }
    // value = magnitude × 10^exponent, no trailing zeros, then the exponent
    // lowered to a multiple of three.
    let mut exponent = -scale;
    while magnitude >= 10 && magnitude.is_multiple_of(10) {
        magnitude /= 10;
        exponent += 1;
    }
    let mut digits = magnitude.to_string();
    while exponent % 3 != 0 {
        digits.push('0');
        exponent -= 1;
    }
    let suffix = match format {
        Format::DecimalExponent if exponent == 0 => String::new(),
        Format::DecimalExponent => format!("e{exponent}"),
        // Go finds no suffix beyond n..E and writes none.
        _ => match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => "",
        }
        .to_string(),
    };
    format!("{sign}{digits}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from Go (apimachinery v0.34.5), run once by hand
    /// through `hack/gojson`; tests/pod_template_hash.rs compares many
    /// more against Go itself.
    #[test]
    fn quantities_are_written_as_go_writes_them() {
        for (input, want) in [
            ("0", "0"),
            ("500m", "500m"),
            ("0.5", "500m"),
            ("1", "1"),
            ("+1", "+1"),
            ("01", "01"),
            ("1.0", "1"),
            ("1000", "1k"),
            ("1500m", "1500m"),
            ("1Gi", "1Gi"),
            ("8Gi", "8Gi"),
            ("1024Mi", "1Gi"),
            ("100Mi", "100Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("1E3", "1E3"),
            ("1.5e3", "1500"),
            ("0.1m", "100u"),
            ("1n", "1n"),
            ("0.1n", "1n"),
            ("-1.5", "-1500m"),
            ("1000E", "1"),
            ("  2  ", "2"),
            ("12345678901234567890", "12345678901234567890"),
        ] {
            assert_eq!(canonical(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn what_go_refuses_is_refused() {
        for input in ["", "abc", "1x", "1Qi", "1e", "1.2.3", "--1", "1e3.5"] {
            assert!(canonical(input).is_err(), "{input} accepted");
        }
    }
}
