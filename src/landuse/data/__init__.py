"""Training tables: Parquet/Petastorm writers and readers, graph operators, splits."""
