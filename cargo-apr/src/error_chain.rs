//! One line per error, each cause said once.
//!
//! Many errors print their source inside their own message (`path: cause`)
//! and also return it from `source()`; anyhow's `{:#}` then says the cause
//! twice. Here a cause is appended only when the text so far does not already
//! end with it.

/// `outer: cause: root cause`, without repeats.
pub fn render(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::render;

    /// An error that says its source in its own message and also returns it.
    #[derive(Debug)]
    struct InFile(std::io::Error);

    impl fmt::Display for InFile {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "m.gguf: {}", self.0)
        }
    }

    impl std::error::Error for InFile {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(InFile(io)).context("loading the model");
        assert_eq!(render(&error), "loading the model: m.gguf: no such file");
    }

    #[test]
    fn distinct_causes_are_all_said() {
        let error = anyhow::anyhow!("root").context("middle").context("outer");
        assert_eq!(render(&error), "outer: middle: root");
    }
}
