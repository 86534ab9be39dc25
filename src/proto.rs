//! Code generated from proto/ by build.rs.

pub mod raft {
    tonic::include_proto!("fepha.raft");
}

pub mod admin {
    tonic::include_proto!("fepha.admin");
}

pub mod peer {
    tonic::include_proto!("fepha.peer");
}
