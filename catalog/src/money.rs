//! The one place an amount written in the config (currency units, a TOML float) becomes
//! micro-units, the integer every event, column and report uses.

use crate::ConfigError;

/// The largest money amount a config may hold (in currency units).
pub const MAX_MONEY: f64 = 1e12;

/// `value` (currency units) in micro-units; `key` names it in the error.
pub fn micros(value: f64, key: impl std::fmt::Display) -> Result<i64, ConfigError> {
    if !value.is_finite() || !(0.0..=MAX_MONEY).contains(&value) {
        return Err(ConfigError::invalid(
            key.to_string(),
            format!("{value} is not an amount between 0 and {MAX_MONEY}"),
        ));
    }
    Ok((value * 1e6).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_to_micro_units_and_bad_ones_name_their_key() {
        assert_eq!(micros(1.5, "k").unwrap(), 1_500_000);
        assert_eq!(micros(0.0000015, "k").unwrap(), 2);
        assert_eq!(micros(MAX_MONEY, "k").unwrap(), 1_000_000_000_000_000_000);
        for bad in [-0.01, f64::NAN, f64::INFINITY, MAX_MONEY * 2.0] {
            let e = micros(bad, "offers[3].payout").unwrap_err().to_string();
            assert!(e.starts_with("offers[3].payout: "), "{e}");
        }
    }
}
