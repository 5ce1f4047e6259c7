//! Any string as a remote path: parsing never panics, and what it accepts is a clean absolute
//! path in normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmfs_proto::RemotePath;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = RemotePath::parse(s) {
        let text = p.to_string();
        assert!(text.starts_with('/') && !text.contains('\0') && !text.contains("//"));
        assert!(text.split('/').all(|n| n != "." && n != ".."));
        assert_eq!(RemotePath::parse(&text).unwrap(), p);
    }
});
