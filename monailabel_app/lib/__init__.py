"""The DuoLift MONAI Label app's tasks (laid out like MONAI Label's sample apps: lib/infers/)."""
