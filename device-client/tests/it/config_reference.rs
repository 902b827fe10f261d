//! docs/configuration.md holds every subcommand's `--help`, generated from the binary.

#[test]
fn the_configuration_reference_matches_the_binary() {
    let reference = test_support::help_reference(
        env!("CARGO_BIN_EXE_device-client"),
        "device-client",
        &["ek", "register", "sas", "send", "listen"],
    );
    test_support::check_generated_section(
        &test_support::workspace_root().join("docs/configuration.md"),
        "device-client",
        &reference,
    );
}
