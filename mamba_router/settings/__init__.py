"""Settings: one schema of sections (:mod:`.schema`) and one loader (:mod:`.loader`) for every part of the library,
read from a TOML/YAML file, the environment and arguments, with the source of every value kept."""
