"""Pure rendering: model -> file text. Nothing in this package touches a host or the disk."""
