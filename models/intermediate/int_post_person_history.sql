-- Each post's person, a row appended whenever int_posts_enriched (re)writes the post: an
-- incremental int_people reads it to know which people a build touched, the person a corrected
-- post moved away from included. `_build` numbers this model's builds.
-- A post int_posts_enriched rewrote has a record of a later bronze version than any it held,
-- so the posts to append are those with a version newer than the newest this model holds.
with changed_posts as (
    select
        ind,
        person_id,
        _pin_version,
        _geo_version,
        _user_version
    from {{ ref('int_posts_enriched') }}
    {%- if is_incremental() %}
    where
        _pin_version > {{ version_held('_pin_version') }}
        or _geo_version > {{ version_held('_geo_version') }}
        or _user_version > {{ version_held('_user_version') }}
    {%- endif %}
)

select
    ind,
    person_id,
    _pin_version,
    _geo_version,
    _user_version,
    {{ next_build() }} as _build
from changed_posts
