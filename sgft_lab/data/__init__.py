"""Student sample formats and LightningDataModules (CoT, SG, FDD)."""
