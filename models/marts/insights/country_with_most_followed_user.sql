with most_followed as (
    {{ top_ranked(ref('most_followed_user_by_country'), 'follower_count') }}
)

select
    country,
    poster_name,
    follower_count
from most_followed
