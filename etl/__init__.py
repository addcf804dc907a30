"""ETL: raw J-Quants (or synthetic) data -> panels -> the 395-column feature store and daily graphs."""
