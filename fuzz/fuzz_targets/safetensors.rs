#![no_main]
//! The SafeTensors reader on arbitrary bytes: errors are fine, panics are
//! not, and a successful parse must describe tensors that lie inside the input.

use apr_fuzz::{parse_and_check, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| parse_and_check(Reader::SafeTensors, input));
