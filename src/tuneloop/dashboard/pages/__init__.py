"""The dashboard's pages, one file per part of the loop; each adds its routes to the /ui router."""
