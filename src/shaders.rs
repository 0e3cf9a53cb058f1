//! The registry of WGSL kernels: every shader in `shaders/`, compiled into the binary, in one list
//! that the GPU backend builds its pipelines from and that the tests validate with naga. A new
//! kernel is added here and nowhere else.

/// One WGSL module and the compute entry points the backend uses from it.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// File name under `shaders/` (also the label of its pipelines).
    pub name: &'static str,
    pub source: &'static str,
    pub entry_points: &'static [&'static str],
}

pub const MATMUL: Shader = Shader {
    name: "matmul.wgsl",
    source: include_str!("../shaders/matmul.wgsl"),
    entry_points: &["main"],
};

pub const KMEANS_ASSIGN: Shader = Shader {
    name: "kmeans_assign.wgsl",
    source: include_str!("../shaders/kmeans_assign.wgsl"),
    entry_points: &["main"],
};

pub const KMEANS_UPDATE: Shader = Shader {
    name: "kmeans_update.wgsl",
    source: include_str!("../shaders/kmeans_update.wgsl"),
    entry_points: &["sum_chunks", "move_centroids"],
};

pub const FWHT: Shader = Shader {
    name: "fwht.wgsl",
    source: include_str!("../shaders/fwht.wgsl"),
    entry_points: &["main"],
};

pub const GROUP_FIT: Shader = Shader {
    name: "group_fit.wgsl",
    source: include_str!("../shaders/group_fit.wgsl"),
    entry_points: &["main"],
};

pub const HYPER: Shader = Shader {
    name: "hyper.wgsl",
    source: include_str!("../shaders/hyper.wgsl"),
    entry_points: &["main"],
};

/// Every kernel, in the order the backend creates their pipelines.
pub const ALL: [Shader; 6] = [MATMUL, KMEANS_ASSIGN, KMEANS_UPDATE, FWHT, GROUP_FIT, HYPER];
