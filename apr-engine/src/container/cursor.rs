//! A bounds-checked little-endian reader over a byte slice. Every read names
//! the field it is for, so a short or bad file errors with field and offset.

use crate::error::ParseError;

pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub fn at(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    pub fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Takes `n` bytes, or errors naming `field` if the file ends first.
    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], ParseError> {
        if n > self.remaining() {
            return Err(ParseError::new(
                field,
                self.pos as u64,
                format!("needs {n} bytes but the file ends after {}", self.remaining()),
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], ParseError> {
        Ok(self.take(N, field)?.try_into().expect("take returned N bytes"))
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub fn u16(&mut self, field: &str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &str) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub fn i8(&mut self, field: &str) -> Result<i8, ParseError> {
        Ok(self.u8(field)? as i8)
    }
    pub fn i16(&mut self, field: &str) -> Result<i16, ParseError> {
        Ok(self.u16(field)? as i16)
    }
    pub fn i32(&mut self, field: &str) -> Result<i32, ParseError> {
        Ok(self.u32(field)? as i32)
    }
    pub fn i64(&mut self, field: &str) -> Result<i64, ParseError> {
        Ok(self.u64(field)? as i64)
    }
    pub fn f32(&mut self, field: &str) -> Result<f32, ParseError> {
        Ok(f32::from_le_bytes(self.array(field)?))
    }
    pub fn f64(&mut self, field: &str) -> Result<f64, ParseError> {
        Ok(f64::from_le_bytes(self.array(field)?))
    }

    /// A UTF-8 string of `len` bytes.
    pub fn str(&mut self, len: usize, field: &str) -> Result<&'a str, ParseError> {
        let at = self.pos as u64;
        let raw = self.take(len, field)?;
        std::str::from_utf8(raw).map_err(|e| ParseError::new(field, at, format!("invalid UTF-8: {e}")))
    }
}
