//! GPT-2's byte-level alphabet: every byte stands for one printable code point,
//! so BPE vocabularies can be stored as text. Printable Latin-1 bytes stand for
//! themselves; the rest (controls, space, DEL, NBSP, soft hyphen) take U+0100
//! onwards, in byte order.

use std::sync::OnceLock;

fn stands_for_itself(byte: u8) -> bool {
    matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The bytes that do not stand for themselves: 33 controls and space, DEL and
/// 32 C1 controls, NBSP, soft hyphen.
const EXTRA_COUNT: usize = 68;

struct Alphabet {
    char_of_byte: [char; 256],
    /// The byte spelt U+0100 + i.
    byte_of_extra: [u8; EXTRA_COUNT],
}

fn alphabet() -> &'static Alphabet {
    static ALPHABET: OnceLock<Alphabet> = OnceLock::new();
    ALPHABET.get_or_init(|| {
        let mut char_of_byte = ['\0'; 256];
        let mut byte_of_extra = [0u8; EXTRA_COUNT];
        let mut extras = 0;
        for byte in 0..=255u8 {
            char_of_byte[byte as usize] = if stands_for_itself(byte) {
                char::from(byte)
            } else {
                byte_of_extra[extras] = byte;
                extras += 1;
                char::from_u32(0xFF + extras as u32).expect("U+0100..U+0143 are chars")
            };
        }
        Alphabet { char_of_byte, byte_of_extra }
    })
}

/// Appends the byte-level spelling of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    let alphabet = alphabet();
    out.extend(bytes.iter().map(|&b| alphabet.char_of_byte[b as usize]));
}

/// The byte a byte-level code point stands for.
pub fn byte_of(c: char) -> Option<u8> {
    match c as u32 {
        cp @ 0..=0xFF if stands_for_itself(cp as u8) => Some(cp as u8),
        cp @ 0x100..=0x143 => Some(alphabet().byte_of_extra[(cp - 0x100) as usize]),
        _ => None,
    }
}

/// Decodes a byte-level token text. A code point outside the alphabet is kept
/// as llama.cpp keeps it: `[UNK_BYTE_0x<its utf-8 hex><the whole text>]`.
pub fn decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match byte_of(c) {
            Some(b) => out.push(b),
            None => {
                let mut utf8 = [0u8; 4];
                let hex: String = c.encode_utf8(&mut utf8).bytes().map(|b| format!("{b:02x}")).collect();
                out.extend_from_slice(format!("[UNK_BYTE_0x{hex}{text}]").as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_through_one_char() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let mut s = String::new();
            encode_into(&[b], &mut s);
            assert_eq!(s.chars().count(), 1);
            let c = s.chars().next().unwrap();
            assert!(seen.insert(c), "byte {b} shares {c:?}");
            assert_eq!(byte_of(c), Some(b));
        }
    }

    #[test]
    fn known_spellings() {
        let mut s = String::new();
        encode_into(b" hello\n\t", &mut s);
        assert_eq!(s, "\u{120}hello\u{10A}\u{109}");
        assert_eq!(decode("\u{120}world"), b" world");
        // U+00AD (soft hyphen) is not printable: byte 0xAD is spelt U+0143
        assert_eq!(byte_of('\u{143}'), Some(0xAD));
        assert_eq!(decode("a\u{4e2d}"), "a[UNK_BYTE_0xe4b8ada\u{4e2d}]".as_bytes());
    }
}
