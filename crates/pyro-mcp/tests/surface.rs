//! The MCP tool surface pinned: per profile, every tool with its sorted parameter names.
//! A renamed tool or parameter, or a profile change, fails `mcp_tool_surface_is_pinned`;
//! if intended, rerun with PYRO_UPDATE_SURFACE=1 and update CHANGELOG.md.

use pyro_mcp::{Profile, PyroMcp};

fn surface() -> String {
    let pyro = pyro::Pyro::with_paths(pyro::Paths { home: "/nonexistent".into(), cache_dir: "/nonexistent".into() });
    let mut out = String::new();
    for profile in Profile::ALL {
        let server = PyroMcp::new(pyro.clone(), profile);
        let mut lines: Vec<String> = server
            .tools()
            .iter()
            .map(|t| {
                let mut params: Vec<&String> = t
                    .input_schema
                    .get("properties")
                    .and_then(|p| p.as_object())
                    .map(|p| p.keys().collect())
                    .unwrap_or_default();
                params.sort();
                let params: Vec<&str> = params.iter().map(|s| s.as_str()).collect();
                format!("{} {}: {}", profile.as_str(), t.name, params.join(" ")).trim_end().to_string()
            })
            .collect();
        lines.sort();
        out.push_str(&format!("# {} ({} tools)\n", profile.as_str(), lines.len()));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn mcp_tool_surface_is_pinned() {
    let actual = surface();
    let pinned_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp-tool-surface.txt");
    if std::env::var_os("PYRO_UPDATE_SURFACE").is_some() {
        std::fs::write(pinned_path, &actual).unwrap();
    }
    let pinned = std::fs::read_to_string(pinned_path).unwrap_or_default();
    assert_eq!(actual, pinned, "the MCP tool surface changed; if intended, rerun with PYRO_UPDATE_SURFACE=1");
}

#[test]
fn every_profile_lists_exactly_its_reference_tools() {
    let pyro = pyro::Pyro::with_paths(pyro::Paths { home: "/nonexistent".into(), cache_dir: "/nonexistent".into() });
    for profile in Profile::ALL {
        let mut listed: Vec<String> =
            PyroMcp::new(pyro.clone(), profile).tools().iter().map(|t| t.name.to_string()).collect();
        listed.sort();
        let expected: Vec<String> = profile.tool_names().iter().map(|s| s.to_string()).collect();
        let missing: Vec<&String> = expected.iter().filter(|n| !listed.contains(n)).collect();
        assert!(missing.is_empty(), "profile {}: tools not implemented: {missing:?}", profile.as_str());
        assert_eq!(listed, expected, "profile {}", profile.as_str());
    }
}
