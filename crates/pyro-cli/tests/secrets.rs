//! Workspace secrets: visible to the command that asks for them, redacted everywhere pyro
//! reports or records, and never on the disk image.

mod common;

use common::{fail, file_contains, ok, stderr, stdout, TestHome};

#[test]
fn secrets_reach_the_command_and_nothing_else() {
    let home = TestHome::new();
    let value = "s3cr3t-VALUE-91c2e";
    let file_value = "file-secret-0d7b44";
    let secret_file = home.path().join("token.txt");
    std::fs::write(&secret_file, file_value).unwrap();
    let w = ok(
        &home,
        &[
            "workspace",
            "create",
            "debian:12",
            "--secret",
            &format!("API_TOKEN={value}"),
            "--secret-file",
            &format!("DB_PASS={}", secret_file.display()),
            "--json",
        ],
    );
    let id = w["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(
        w["secrets"],
        serde_json::json!([{"name": "API_TOKEN", "source_kind": "literal"}, {"name": "DB_PASS", "source_kind": "file"}])
    );
    let host_copy = home.path().join("workspaces").join(&id).join("secrets/API_TOKEN.secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&host_copy).unwrap().permissions().mode() & 0o777, 0o600);

    // The command sees the value (proved inside the guest without printing it)...
    let check = format!(
        "[ \"$TOKEN\" = '{value}' ] && [ \"$(cat /run/pyro-secrets/DB_PASS)\" = '{file_value}' ] && echo match; echo \"$TOKEN\"; stat -c %a /run/pyro-secrets/API_TOKEN; echo \"$TOKEN\" >&2"
    );
    let o =
        home.run(&["workspace", "exec", &id, "--secret-env", "API_TOKEN=TOKEN", "--json", "--", "sh", "-c", &check]);
    let out = stdout(&o);
    // ...and every output pyro gives back has it redacted.
    assert!(!out.contains(value) && !stderr(&o).contains(value), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stdout"], "match\n[REDACTED]\n600\n", "{v}");
    assert_eq!(v["stderr"], "[REDACTED]\n");

    let logs = home.run(&["workspace", "logs", &id, "--json"]);
    assert!(!stdout(&logs).contains(value));
    assert!(stdout(&logs).contains("[REDACTED]"));
    let status = home.run(&["workspace", "status", &id, "--json"]);
    assert!(!stdout(&status).contains(value) && !stdout(&status).contains(file_value));
    let history_dir = home.path().join("workspaces").join(&id).join("commands");
    for f in std::fs::read_dir(&history_dir).unwrap().flatten() {
        assert!(!file_contains(&f.path(), value.as_bytes()), "history file {:?} holds the secret", f.path());
    }
    let e = fail(&home, &["workspace", "exec", &id, "--secret-env", "NOPE", "--", "true"]);
    assert!(e.contains("secret_env references unknown workspace secret 'NOPE'"), "{e}");

    // Stop: the guest's /run is tmpfs, so no secret byte is on the disk or its export.
    ok(&home, &["workspace", "stop", &id, "--json"]);
    let img = home.path().join("workspaces").join(&id).join("runtime/rootfs.ext4");
    assert!(!file_contains(&img, value.as_bytes()));
    let out_img = home.path().join("export.ext4");
    ok(&home, &["workspace", "disk", "export", &id, "--output", &out_img.display().to_string(), "--json"]);
    assert!(!file_contains(&out_img, value.as_bytes()) && !file_contains(&out_img, file_value.as_bytes()));

    // Start reinstalls them.
    ok(&home, &["workspace", "start", &id, "--json"]);
    let o = home.run(&["workspace", "exec", &id, "--", "sh", "-c", "cat /run/pyro-secrets/API_TOKEN"]);
    assert_eq!(stdout(&o), "[REDACTED]", "{}", stderr(&o));
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

#[test]
fn bad_secrets_create_nothing() {
    let home = TestHome::new();
    let e = fail(&home, &["workspace", "create", "debian:12", "--secret", "9BAD=x"]);
    assert!(e.contains("secret name"), "{e}");
    let e = fail(&home, &["workspace", "create", "debian:12", "--secret", "EMPTY="]);
    assert!(e.contains("must not be empty"), "{e}");
    let e = fail(&home, &["workspace", "create", "debian:12", "--secret-file", "F=/no/such/file"]);
    assert!(e.contains("does not exist"), "{e}");
    let big = home.path().join("big");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).unwrap();
    let e = fail(&home, &["workspace", "create", "debian:12", "--secret-file", &format!("BIG={}", big.display())]);
    assert!(e.contains("at most 65536 bytes"), "{e}");
    let bin = home.path().join("bin");
    std::fs::write(&bin, [0xffu8, 0xfe]).unwrap();
    let e = fail(&home, &["workspace", "create", "debian:12", "--secret-file", &format!("BIN={}", bin.display())]);
    assert!(e.contains("not UTF-8"), "{e}");
    assert_eq!(ok(&home, &["workspace", "list", "--json"])["count"], 0);
}
