//! Every WGSL kernel in the registry parses and validates with naga (no GPU needed), every
//! `shaders/*.wgsl` file is in the registry, and every uniform struct of a shader has the size,
//! field offsets, field sizes and scalar types of its Rust mirror in `src/backend/kernels/`.

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

/// The scalar (`u32`, `f32`, ...) a WGSL member is made of: itself, or its vector's or array's.
#[cfg(feature = "gpu")]
fn scalar_of(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    match &module.types[ty].inner {
        naga::TypeInner::Scalar(s) | naga::TypeInner::Vector { scalar: s, .. } => {
            let kind = match s.kind {
                naga::ScalarKind::Uint => "u",
                naga::ScalarKind::Sint => "i",
                naga::ScalarKind::Float => "f",
                other => panic!("unexpected scalar kind {other:?} in a uniform"),
            };
            format!("{kind}{}", 8 * s.width)
        }
        naga::TypeInner::Array { base, .. } => scalar_of(module, *base),
        other => panic!("unexpected member type {other:?} in a uniform"),
    }
}

/// Each shader's `var<uniform>` struct against its `#[repr(C)]` Rust mirror
/// (`backend::kernels::uniform_layouts`): the same size, and the same data members (by name; the
/// padding members, named `_...`, only through the size) at the same offsets with the same sizes
/// and scalars. Every uniform has a mirror and every mirror a uniform.
#[cfg(feature = "gpu")]
#[test]
fn uniform_structs_match_their_rust_mirrors() {
    let mirrors = lowbit::backend::kernels::uniform_layouts();
    let mut matched = Vec::new();
    for shader in shaders::ALL {
        let module = naga::front::wgsl::parse_str(shader.source).expect("parses");
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("lays out");
        for (_, var) in module.global_variables.iter() {
            if var.space != naga::AddressSpace::Uniform {
                continue;
            }
            let ty = &module.types[var.ty];
            let name = ty.name.as_deref().expect("a named uniform struct");
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{}: the uniform {name} is not a struct", shader.name);
            };
            let mirror = mirrors
                .iter()
                .find(|m| m.shader == shader.name && m.name == name)
                .unwrap_or_else(|| panic!("{}: no Rust mirror of {name}", shader.name));
            assert_eq!(
                *span as usize, mirror.size,
                "{}: {name} is {span} bytes in WGSL, {} in Rust",
                shader.name, mirror.size
            );
            let wgsl: Vec<(String, usize, usize, String)> = members
                .iter()
                .map(|m| (m.name.clone().expect("named member"), m))
                .filter(|(n, _)| !n.starts_with('_'))
                .map(|(n, m)| {
                    let size = layouter[m.ty].size as usize;
                    (n, m.offset as usize, size, scalar_of(&module, m.ty))
                })
                .collect();
            let rust: Vec<(String, usize, usize, String)> = mirror
                .fields
                .iter()
                .map(|f| (f.name.to_string(), f.offset, f.size, f.scalar.to_string()))
                .collect();
            assert_eq!(
                wgsl, rust,
                "{}: {name}'s (member, offset, size, scalar) in WGSL (left) and Rust (right)",
                shader.name
            );
            matched.push((mirror.shader, mirror.name));
        }
    }
    for m in &mirrors {
        assert!(
            matched.contains(&(m.shader, m.name)),
            "{} has no uniform {} for the Rust mirror",
            m.shader,
            m.name
        );
    }
    assert_eq!(matched.len(), mirrors.len(), "a mirror listed twice");
}
