//! Pictures of a run: the graph model built from a run and its history ([`view`]), its
//! layered layout ([`layout`]), and the drawings made from it, SVG for the page and the
//! terminal ([`svg`]) and Mermaid for pull requests ([`mermaid`]). A room of its own above
//! the engine: the engine decides, this only draws what it decided.

pub mod layout;
pub mod mermaid;
pub mod svg;
pub mod view;

#[cfg(test)]
mod tests;

pub use mermaid::to_mermaid;
pub use svg::to_svg;
pub use view::GraphView;
