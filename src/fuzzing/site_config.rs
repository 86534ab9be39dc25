//! The site configuration check, on arbitrary UTF-8 text, as `config apply` and `config check`
//! run it. Besides "no panic": a document that passes also passes once written out again
//! by the serializer and read back, with no change `diff` can see, and writing that out
//! gives the same text (written text is a fixed point), so what the node would store
//! after an edit round trip is the site that was checked.

use crate::site::{Counts, check, diff};

pub fn site_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(site) = check(text) else {
        return;
    };
    let written = match toml::to_string(&site) {
        Ok(written) => written,
        Err(e) => panic!("a valid site does not serialize: {e}"),
    };
    let again = match check(&written) {
        Ok(again) => again,
        Err(e) => panic!("a valid site, written out, is refused: {e}\n{written}"),
    };
    let changes = diff(&site, &again);
    assert!(changes.is_empty(), "changed by the round trip: {changes:?}");
    assert_eq!(Counts::of(&site), Counts::of(&again));
    match toml::to_string(&again) {
        Ok(rewritten) => assert_eq!(rewritten, written, "the written text is not stable"),
        Err(e) => panic!("a re-read site does not serialize: {e}"),
    }
}
