"""Spark ETL: source adapters emit canonical encounters; transforms build features; loads are atomic."""
