//! Stop sequences over streamed text: text that might be the start of a stop
//! sequence is held back until the next piece says whether it is one, so a
//! client never sees any part of a stop sequence.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What one piece of text released.
#[derive(Debug, PartialEq)]
pub struct Released {
    pub text: String,
    /// A stop sequence was found: `text` is everything before it, and generation ends.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Adds `piece`; releases the text that can no longer be part of a stop sequence.
    pub fn push(&mut self, piece: &str) -> Released {
        self.held.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.held.truncate(at);
            return Released { text: std::mem::take(&mut self.held), stopped: true };
        }
        let keep = self.partial_suffix_len();
        let text = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        Released { text, stopped: false }
    }

    /// The text still held back (generation ended without a stop sequence).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of the held text that begins some stop sequence.
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        held.char_indices()
            .map(|(i, _)| &held[i..])
            .find(|suffix| self.stops.iter().any(|s| s.starts_with(suffix)))
            .map_or(0, str::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(text: &str, stopped: bool) -> Released {
        Released { text: text.into(), stopped }
    }

    #[test]
    fn a_stop_sequence_split_over_pieces_is_never_shown() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc E"), released("abc ", false));
        assert_eq!(m.push("N"), released("", false));
        assert_eq!(m.push("Dxyz"), released("", true));
    }

    #[test]
    fn a_false_start_is_released_and_the_rest_kept_at_the_end() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(m.push("EN"), released("", false));
        assert_eq!(m.push("x é\n"), released("ENx é", false));
        assert_eq!(m.finish(), "\n");
        let mut none = StopMatcher::new(vec![]);
        assert_eq!(none.push("anything"), released("anything", false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["b".into(), "a".into()]);
        assert_eq!(m.push("xxabc"), released("xx", true));
    }
}
