//! PASS / WARN / FAIL coloured on a terminal; plain when stdout is piped or
//! `NO_COLOR` is set (no-color.org), so logs and greps see the bare word.

use std::io::IsTerminal;

/// `word` (PASS, WARN, FAIL) as stdout should show it.
pub fn status(word: &str) -> String {
    paint(word, colour_wanted())
}

fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn paint(word: &str, colour: bool) -> String {
    let code = match word {
        "PASS" => "32",
        "WARN" => "33",
        "FAIL" => "31",
        _ => return word.to_string(),
    };
    if colour {
        format!("\x1b[1;{code}m{word}\x1b[0m")
    } else {
        word.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::paint;

    #[test]
    fn verdicts_are_coloured_only_when_asked() {
        assert_eq!(paint("PASS", true), "\x1b[1;32mPASS\x1b[0m");
        assert_eq!(paint("FAIL", true), "\x1b[1;31mFAIL\x1b[0m");
        assert_eq!(paint("FAIL", false), "FAIL");
        assert_eq!(paint("other", true), "other");
    }
}
