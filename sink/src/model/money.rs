//! Money as exact integers: millionths of the currency unit ("micros").

/// Why a decimal string is not an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is empty")]
    Empty,
    #[error("is not a decimal number like 12.34")]
    NotANumber,
    #[error("has more than 6 decimal places")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
}

/// Parses a decimal amount (`92.4`, `-3`, `0.000001`, `+1.50`) into micros, exactly.
/// Trailing zeros past the sixth decimal are accepted; other digits there are an error, as
/// rounding would change the amount.
pub fn parse_micros(s: &[u8]) -> Result<i64, MoneyError> {
    let s = s.trim_ascii();
    let (neg, digits) = match s.split_first() {
        None => return Err(MoneyError::Empty),
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        Some(_) => (false, s),
    };
    let (int, frac) = match digits.iter().position(|&c| c == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(MoneyError::NotANumber);
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(MoneyError::NotANumber);
    }
    if frac.len() > 6 && frac[6..].iter().any(|&c| c != b'0') {
        return Err(MoneyError::TooPrecise);
    }
    let mut v: i64 = 0;
    for &c in int {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(c - b'0')))
            .ok_or(MoneyError::TooLarge)?;
    }
    let mut f: i64 = 0;
    for i in 0..6 {
        f = f * 10 + frac.get(i).map_or(0, |&c| i64::from(c - b'0'));
    }
    let micros = v
        .checked_mul(1_000_000)
        .and_then(|v| v.checked_add(f))
        .ok_or(MoneyError::TooLarge)?;
    Ok(if neg { -micros } else { micros })
}

/// Appends `micros` as a decimal with at least two and at most six decimal places
/// (`92.40`, `0.000001`, `-3.00`), without allocating.
pub fn write_decimal(micros: i64, out: &mut Vec<u8>) {
    if micros < 0 {
        out.push(b'-');
    }
    let m = micros.unsigned_abs();
    write_digits(m / 1_000_000, 1, out);
    out.push(b'.');
    let mut frac = m % 1_000_000;
    let mut places = 6;
    while places > 2 && frac.is_multiple_of(10) {
        frac /= 10;
        places -= 1;
    }
    write_digits(frac, places, out);
}

/// Appends `n` in decimal, left-padded with zeros to `width` digits.
pub fn write_digits(mut n: u64, width: usize, out: &mut Vec<u8>) {
    let mut tmp = [b'0'; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(tmp.len() - width.min(tmp.len()));
    out.extend_from_slice(&tmp[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        for (s, want) in [
            ("92.4", 92_400_000),
            ("0", 0),
            ("-3", -3_000_000),
            ("+1.50", 1_500_000),
            (".5", 500_000),
            ("7.", 7_000_000),
            ("0.000001", 1),
            ("1.2300000", 1_230_000),
            (" 12.34 ", 12_340_000),
            ("9223372036854.775807", i64::MAX),
        ] {
            assert_eq!(parse_micros(s.as_bytes()), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_hold_exactly() {
        for (s, want) in [
            ("", MoneyError::Empty),
            ("-", MoneyError::NotANumber),
            (".", MoneyError::NotANumber),
            ("1e3", MoneyError::NotANumber),
            ("1,5", MoneyError::NotANumber),
            ("nan", MoneyError::NotANumber),
            ("1.2.3", MoneyError::NotANumber),
            ("0.0000001", MoneyError::TooPrecise),
            ("9223372036855", MoneyError::TooLarge),
            ("99999999999999999999999", MoneyError::TooLarge),
        ] {
            assert_eq!(parse_micros(s.as_bytes()), Err(want), "{s}");
        }
    }

    #[test]
    fn writes_decimals() {
        for (m, want) in [
            (92_400_000, "92.40"),
            (0, "0.00"),
            (1, "0.000001"),
            (-3_000_000, "-3.00"),
            (50_000, "0.05"),
            (1_234_500, "1.2345"),
        ] {
            let mut out = Vec::new();
            write_decimal(m, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Every amount but `i64::MIN` (whose magnitude no positive i64 holds) is written
            /// as a decimal that parses back to it.
            #[test]
            fn written_decimals_parse_back(micros in (i64::MIN + 1)..=i64::MAX) {
                let mut out = Vec::new();
                write_decimal(micros, &mut out);
                prop_assert_eq!(parse_micros(&out), Ok(micros));
            }

            /// Decimals parse to exactly their value, or to the error that says why they
            /// cannot: checked against arithmetic on i128.
            #[test]
            fn decimals_parse_exactly(
                sign in "[+-]?",
                int in "[0-9]{0,20}",
                frac in proptest::option::of("[0-9]{0,9}"),
            ) {
                let text = match &frac {
                    Some(f) => format!("{sign}{int}.{f}"),
                    None => format!("{sign}{int}"),
                };
                let f = frac.unwrap_or_default();
                let want = if text.is_empty() {
                    Err(MoneyError::Empty)
                } else if int.is_empty() && f.is_empty() {
                    Err(MoneyError::NotANumber)
                } else if f.len() > 6 && f[6..].bytes().any(|c| c != b'0') {
                    Err(MoneyError::TooPrecise)
                } else {
                    let whole: i128 = if int.is_empty() { 0 } else { int.parse().unwrap() };
                    let six: i128 = format!("{f:0<6}")[..6].parse().unwrap();
                    let micros = whole * 1_000_000 + six;
                    if micros > i128::from(i64::MAX) {
                        Err(MoneyError::TooLarge)
                    } else if sign == "-" {
                        Ok(-(micros as i64))
                    } else {
                        Ok(micros as i64)
                    }
                };
                prop_assert_eq!(parse_micros(text.as_bytes()), want, "{}", text);
            }
        }
    }
}
