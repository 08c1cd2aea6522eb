//! The unified-diff parser and applier (`workspace patch apply`): input is
//! `<current file text> NUL <patch text>`; the patch is parsed, then each file patch is applied
//! to that text and to a missing file. Nothing may panic or allocate past libFuzzer's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_tree::patch::{apply_file_patch, parse_patch};

fuzz_target!(|data: &[u8]| {
    let (current, patch) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let (Ok(current), Ok(patch)) = (std::str::from_utf8(current), std::str::from_utf8(patch)) else {
        return;
    };
    let Ok(files) = parse_patch(patch) else { return };
    for fp in &files {
        let _ = fp.path();
        let _ = fp.status();
        for h in &fp.hunks {
            let _ = h.header();
        }
        if let Ok(Some(new)) = apply_file_patch(Some(current), fp) {
            // Applying grows the text by at most what the patch adds.
            assert!(new.len() <= current.len() + patch.len());
        }
        let _ = apply_file_patch(None, fp);
    }
});
