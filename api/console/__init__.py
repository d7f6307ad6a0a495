"""The merchandiser's console at `/`: server-rendered pages over the same job service the API
exposes. Pages are rendered with the caller's own view of jobs; the little JavaScript there is
(static/console.js) submits through /v1/jobs and follows a running job's progress."""
