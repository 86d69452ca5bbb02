"""Looking at a collection as a whole: clusters with names, a 2-D map, similarity heatmaps and
classification by example. Results are ordinary tables (COLLECTION_clusters, ...) that any
SQLite client and Datasette read.

scikit-learn (clustering) and matplotlib (pictures) come with the `explore` extra; the HTML
map and classification need numpy only.
"""
