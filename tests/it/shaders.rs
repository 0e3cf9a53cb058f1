//! Every WGSL kernel in the registry parses and validates with naga (no GPU needed), and every
//! `shaders/*.wgsl` file is in the registry.

use lowbit::shaders;

#[test]
fn every_shader_parses_and_validates() {
    for shader in shaders::ALL {
        let module = naga::front::wgsl::parse_str(shader.source).unwrap_or_else(|e| {
            panic!(
                "{}:\n{}",
                shader.name,
                e.emit_to_string_with_path(shader.source, shader.name)
            )
        });
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        );
        if let Err(e) = validator.validate(&module) {
            panic!(
                "{}:\n{}",
                shader.name,
                e.emit_to_string_with_path(shader.source, shader.name)
            );
        }
        for entry in shader.entry_points {
            let found = module
                .entry_points
                .iter()
                .find(|e| e.name == *entry)
                .unwrap_or_else(|| panic!("{} has no entry point {entry}", shader.name));
            assert_eq!(found.stage, naga::ShaderStage::Compute, "{}", shader.name);
            let [x, y, z] = found.workgroup_size;
            // WebGPU's guaranteed limit: 256 invocations per workgroup.
            assert!(
                x * y * z <= 256,
                "{} {entry}: workgroup too large",
                shader.name
            );
        }
    }
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    let mut registered: Vec<String> = shaders::ALL.iter().map(|s| s.name.to_string()).collect();
    registered.sort();
    assert_eq!(files, registered);
}
