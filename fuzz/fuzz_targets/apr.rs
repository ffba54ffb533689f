#![no_main]
//! The APR reader on arbitrary bytes, twice: as given (which exercises the
//! checksum checks) and with both CRC32s recomputed (which lets mutations
//! reach the header, metadata, index and layout checks behind them).

use apr_fuzz::{parse_and_check, reseal_apr, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    parse_and_check(Reader::Apr, input);
    let mut sealed = input.to_vec();
    reseal_apr(&mut sealed);
    parse_and_check(Reader::Apr, &sealed);
});
