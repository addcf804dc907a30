"""Daily correlation graphs: rolling correlations and top-k peers (corr), graph metrics (metrics), the stage
(build)."""
