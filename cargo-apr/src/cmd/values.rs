//! Value parsers for flags whose type alone admits meaningless values: clap
//! reports their errors as usage errors (exit 2) naming the flag.

use std::ffi::OsStr;

/// Text that must be UTF-8 (a prompt, a system message); says where it is not.
#[derive(Clone, Copy, Debug)]
pub struct Utf8Text;

impl clap::builder::TypedValueParser for Utf8Text {
    type Value = String;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<String, clap::Error> {
        let bytes = value.as_encoded_bytes();
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
            let flag = arg.map_or_else(|| "the argument".to_string(), |a| a.to_string());
            let message = format!("{flag} is not valid UTF-8: {}\n", utf8_error(bytes, &e));
            clap::Error::raw(clap::error::ErrorKind::InvalidUtf8, message).with_cmd(cmd)
        })
    }
}

/// `byte 0xff at offset 0`.
pub fn utf8_error(bytes: &[u8], e: &std::str::Utf8Error) -> String {
    format!("byte 0x{:02x} at offset {}", bytes[e.valid_up_to()], e.valid_up_to())
}

/// A count that must be at least one (repetitions, measured tokens, threads).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

/// Sampling temperature: finite and not negative (0 = greedy).
pub fn temperature(text: &str) -> Result<f32, String> {
    let value = number(text)?;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err("must be a finite number >= 0 (0 = greedy)".into())
    }
}

/// Nucleus sampling mass: in (0, 1].
pub fn top_p(text: &str) -> Result<f32, String> {
    let value = number(text)?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err("must be in (0, 1] (1 = off)".into())
    }
}

fn number(text: &str) -> Result<f32, String> {
    text.trim().parse::<f32>().map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_values_outside_their_range_are_refused() {
        for bad in ["NaN", "inf", "-1", "-0.5", "x"] {
            assert!(temperature(bad).is_err(), "temperature {bad}");
        }
        for bad in ["2", "NaN", "-1", "0", "inf"] {
            assert!(top_p(bad).is_err(), "top-p {bad}");
        }
        assert_eq!(temperature("0"), Ok(0.0));
        assert_eq!(top_p("1"), Ok(1.0));
        assert_eq!(at_least_one("0"), Err("must be at least 1".into()));
        assert_eq!(at_least_one("3"), Ok(3));
    }
}
