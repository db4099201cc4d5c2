"""landuse: urban land-use inference from multi-source spatial big data (Spark/Sedona + PyTorch)."""

from pathlib import Path

from setuptools import find_packages, setup

VERSION = "0.1.0"  # keep in sync with src/landuse/__init__.py

# Runtime requirements as ranges; exact versions live in constraints.txt. petastorm is left out on
# purpose: its metadata pins setuptools<70 while torch 2.13 needs setuptools>=77, so it is installed
# separately with --no-deps (see Makefile and README "Installing").
REQUIREMENTS = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "pyspark"))
]

setup(
    name="landuse",
    version=VERSION,
    description=__doc__,
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    package_dir={"": "src"},
    packages=find_packages("src"),
    # Clusters bring their own Spark (Databricks, EMR): pyspark is an extra, and torch is a range so
    # a runtime's build is kept; the Makefile pins both (torch==2.13.0 CPU, pyspark from requirements).
    install_requires=["torch>=2.1", *REQUIREMENTS],
    extras_require={"spark": ["pyspark==3.5.3"], "test": ["pytest>=8"]},
    entry_points={"console_scripts": ["landuse=landuse.cli:main"]},
)
