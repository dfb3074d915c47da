"""Figures and tables of method comparisons, drawn from the pipelines' `report.json` files."""
