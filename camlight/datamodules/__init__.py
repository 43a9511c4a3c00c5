"""Datamodules: every split yields the camlight batch format (see `SyntheticPets`)."""

from camlight.datamodules.synthetic import SyntheticPets, SyntheticPetsDataset

__all__ = ["SyntheticPets", "SyntheticPetsDataset"]
