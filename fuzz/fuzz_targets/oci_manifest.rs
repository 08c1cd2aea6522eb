//! A manifest, an index and a config come from a registry: hostile input to pyro-oci's
//! selection (`select_image`: image manifest or index, the linux/amd64 entry, descriptors with
//! checked digests and bounded sizes) and to `check_config_platform`. The first byte picks the
//! Content-Type the registry is taken to have sent and whether an index may be followed; the
//! rest is the document. When it selects an image, the same bytes are also checked as the
//! config of each config media type. Nothing may panic; whatever is accepted must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_oci::registry::{
    check_config_platform, select_image, Descriptor, ImageChoice, DOCKER_LIST, DOCKER_MANIFEST, MAX_CONFIG,
    MAX_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};

const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_LIST),
    Some("application/json"),
    Some("application/octet-stream"),
    Some("text/html"),
];

const CONFIG_TYPES: [&str; 4] = [
    "application/vnd.pyro.environment.config.v1+json",
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.empty.v1+json",
];

fn is_digest(d: &str) -> bool {
    d.len() == 71 && d.starts_with("sha256:") && d[7..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, doc)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(selector & 7)];
    let follow = selector & 8 == 0;
    match select_image(doc, content_type, "manifest fuzz/x:1", "fuzz/x:1", follow) {
        Ok(ImageChoice::Follow(entry)) => {
            assert!(follow, "an index was followed where it must not be");
            assert!(is_digest(&entry.digest), "entry digest {:?}", entry.digest);
            assert!(entry.size <= MAX_MANIFEST);
        }
        Ok(ImageChoice::Image(m)) => {
            assert!(m.media_type == OCI_MANIFEST || m.media_type == DOCKER_MANIFEST, "{}", m.media_type);
            assert!(m.config.size <= MAX_CONFIG);
            assert!(is_digest(&m.config.digest));
            assert!(m.layers.iter().all(|l| is_digest(&l.digest)));
            let _ = check_config_platform("fuzz/x:1", &m.config, doc);
        }
        Err(_) => {}
    }
    for media_type in CONFIG_TYPES {
        let config = Descriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: doc.len() as u64,
            annotations: Default::default(),
        };
        let checked = check_config_platform("fuzz/x:1", &config, doc);
        if media_type == "application/vnd.oci.empty.v1+json" {
            assert!(checked.is_ok(), "a config of another media type is not read");
        }
    }
});
