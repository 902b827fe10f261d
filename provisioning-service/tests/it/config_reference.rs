//! docs/configuration.md holds every subcommand's `--help`, generated from the binary.

#[test]
fn the_configuration_reference_matches_the_binary() {
    let reference = test_support::help_reference(
        env!("CARGO_BIN_EXE_provisioning-service"),
        "provisioning-service",
        &[
            "serve",
            "enroll",
            "bulk-enroll",
            "migrate",
            "hub-watch",
            "crl-sync",
        ],
    );
    test_support::check_generated_section(
        &test_support::workspace_root().join("docs/configuration.md"),
        "provisioning-service",
        &reference,
    );
}
