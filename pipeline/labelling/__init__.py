"""The labelling loop with Label Studio: midlevel as its ML backend (pre-labels, a labelling
priority per task, a head refitted as annotations arrive). docs/label-studio.md."""
