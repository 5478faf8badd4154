//! Helpers shared by the workspace tests: where the compiled plugins are, and a tap that
//! consumes what plugins publish.
